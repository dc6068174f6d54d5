"""Training-step and inference throughput, parameters and MACs of every SANet variant next to a plain ResNet-50.

For each model, in one run on the same machine and input size:

* train img/s: a full training step (forward in training mode, the loss of Eq. 6 on synthetic labels, backward,
  an SGD step); the plain ResNet-50 step uses cross-entropy on its classifier;
* infer img/s: an eval-mode forward under `torch.inference_mode`;
  both the median over rounds, each round timing one step of every model in turn (round-robin), so that other
  processes taking the machine's cores for a while slow every model alike;
* parameters (without identity classifiers) and MACs per image of the eval forward (`sanet.model.cost`).

Target: `sanet` inference at 0.8x or more of the `global` variant's throughput (the AFE's cost). The adaptive
variant computes one AFE cell per layer and image at eval; its figures are for the routes random weights take.
Weights are random (`pretrained: none`): throughput does not depend on them.

Usage: python benchmarks/model_cost.py [--backbone resnet50] [--height 384 --width 128] [--batch-size 8]
       [--rounds 3] [--warmup 1] [--variants hpnet global fixed_fe sanet] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50

from sanet.config import load_params
from sanet.contracts.parts import NUM_PARTS
from sanet.contracts.variants import VARIANTS
from sanet.model.cost import count_macs, count_parameters
from sanet.model.sanet import build_model
from sanet.train.losses import build_criterion

PLAIN = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(
    batch: int, height: int, width: int, classes: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Random images, pids in pairs (so the triplet loss has positives) and horizontal-band part labels."""
    images = torch.randn(batch, 3, height, width, device=device)
    pids = (torch.arange(batch, device=device) // 2) % classes
    labels = torch.zeros(batch, NUM_PARTS, height, width, device=device)
    bands = torch.linspace(0, height, NUM_PARTS).long().tolist()
    for part in range(NUM_PARTS - 1):
        labels[:, part, bands[part] : bands[part + 1]] = 1.0
    labels[:, NUM_PARTS - 1] = 1.0
    return images, pids, labels


class Candidate:
    """A model under test, with its training step and inference step."""

    def __init__(self, name: str, model: nn.Module, loss_fn: Callable[[object], torch.Tensor], params: int) -> None:
        self.name, self.model, self.loss_fn, self.params = name, model, loss_fn, params
        self.optimiser = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        self.times: dict[str, list[float]] = {"train": [], "infer": []}

    def train_step(self, images: torch.Tensor) -> None:
        self.model.train()
        loss = self.loss_fn(self.model(images))
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()

    def infer_step(self, images: torch.Tensor) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.model(images)


CPU_SHARES: list[float] = []
"""Per timed CPU step: this process's CPU time / (wall time x threads); well below 1 means other processes competed."""


def timed(step: Callable[[torch.Tensor], None], images: torch.Tensor, device: torch.device) -> float:
    """Wall-clock seconds of one step (recording, on CPU, the share of the cores this process had meanwhile)."""
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    step(images)
    _sync(device)
    wall = time.perf_counter() - start
    if device.type == "cpu":
        CPU_SHARES.append((time.process_time() - cpu_start) / (wall * torch.get_num_threads()))
    return wall


def run_rounds(
    candidates: list[Candidate], images: torch.Tensor, rounds: int, warmup: int, device: torch.device
) -> None:
    """Time one training step and one inference step of every candidate per round, round-robin, so that other
    processes taking the machine's cores for a while slow every model alike; the first `warmup` rounds are dropped."""
    for round_index in range(warmup + rounds):
        for c in candidates:
            train, infer = timed(c.train_step, images, device), timed(c.infer_step, images, device)
            if round_index >= warmup:
                c.times["train"].append(train)
                c.times["infer"].append(infer)
        print(f"round {round_index + 1}/{warmup + rounds} done", flush=True)


def row(c: Candidate, images: torch.Tensor) -> dict[str, float | str]:
    """Median throughputs over the rounds, parameters and MACs per image."""
    n = len(images)
    return {
        "model": c.name,
        "train": n / statistics.median(c.times["train"]),
        "infer": n / statistics.median(c.times["infer"]),
        "params": c.params,
        "macs": count_macs(c.model, images[: min(n, 4)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--backbone", default="resnet50", choices=sorted(PLAIN))
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (one step of every model each)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--num-classes", type=int, default=751, help="training identities (Market-1501: 751)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    images, pids, labels = synthetic_batch(args.batch_size, args.height, args.width, args.num_classes, device)
    overrides = [f"model.backbone={args.backbone}", "model.pretrained=none", "profile=paper", *args.overrides]
    base = load_params(args.params, overrides)

    plain = PLAIN[args.backbone](num_classes=args.num_classes).to(device)
    plain_params = sum(p.numel() for n, p in plain.named_parameters() if not n.startswith("fc."))
    candidates = [Candidate(f"plain {args.backbone}", plain, lambda out: F.cross_entropy(out, pids), plain_params)]
    for variant in args.variants:
        params = base.model_copy(update={"model": base.model.model_copy(update={"variant": variant})})
        model = build_model(params, args.num_classes).to(device)
        criterion = build_criterion(params)
        loss_fn = lambda out, c=criterion: c(out, pids, labels)[0]  # noqa: E731
        candidates.append(Candidate(variant, model, loss_fn, count_parameters(model)))
    run_rounds(candidates, images, args.rounds, args.warmup, device)
    rows = [row(c, images) for c in candidates]

    afe = base.model.afe
    print(
        f"\n{args.backbone}, {args.height}x{args.width}, batch {args.batch_size}, median of {args.rounds} rounds, "
        f"device {device} ({torch.get_num_threads()} threads), AFE {afe.layers} layers, {afe.kernel}x{afe.kernel}, "
        f"width {afe.width}"
    )
    print(_format(rows))
    if CPU_SHARES:
        share = statistics.median(CPU_SHARES)
        note = "" if share >= 0.8 else " (other processes competed for the cores: the figures are pessimistic)"
        print(f"median share of the {torch.get_num_threads()} threads' CPU time this process got: {share:.0%}{note}")
    by_name = {row["model"]: row for row in rows}
    if "sanet" in by_name and "global" in by_name:
        ratio = float(by_name["sanet"]["infer"]) / float(by_name["global"]["infer"])
        verdict = "meets" if ratio >= 0.8 else "misses"
        print(f"\nsanet / global inference throughput: {ratio:.2f} ({verdict} the 0.8 target)")


def _format(rows: list[dict[str, float | str]], header: bool = True) -> str:
    lines = [f"{'model':<16} {'train img/s':>11} {'infer img/s':>11} {'params (M)':>10} {'GMACs':>7}"] if header else []
    for r in rows:
        lines.append(
            f"{r['model']:<16} {r['train']:>11.2f} {r['infer']:>11.2f} {float(r['params']) / 1e6:>10.2f} "
            f"{float(r['macs']) / 1e9:>7.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
