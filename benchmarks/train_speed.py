"""Training throughput (images/s) of every SANet variant at the demo and the paper input size, and of the data pipeline.

Model rows time `sanet.train.step.TrainStep`, the step `sanet train` runs (forward in training mode, the loss of
Eq. 6, backward, SGD), on random images with band-shaped part labels, so that the figure is the model's cost alone:

* `demo`: the demo profile (ResNet-18 trunk from scratch, 128 x 64, batch train.batch_size of the profile);
* `paper`: the paper's settings (ResNet-50, 384 x 128); on a CPU the batch defaults to 8 images (a batch of 64
  takes over a minute per step), on CUDA to the paper's 64 with AMP (train.amp: bf16 where supported) and
  channels-last, as `sanet train` uses them.

The data row times the training DataLoader (decode, joint image + mask augmentation, mask labels) over the
synthetic Market-1501 under `data.root` with `data.workers` processes, when `data/` and `masks/` exist
(`make demo`); training is data-bound when this is below the model rows.

Figures are the median of `--rounds` timed steps after `--warmup` untimed ones; images/s counts the whole batch.

Usage: python benchmarks/train_speed.py [--device cpu|cuda] [--variants hpnet global fixed_fe sanet]
       [--sizes demo paper] [--batch-size N] [--rounds 3] [--warmup 1] [--threads N] [--no-data]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from model_cost import synthetic_batch  # benchmarks/model_cost.py: random images with band-shaped part labels

from sanet.config import Params, load_params
from sanet.contracts.variants import VARIANTS
from sanet.engine.features import autocast_dtype
from sanet.model.sanet import build_model
from sanet.train.losses import build_criterion
from sanet.train.optim import build_optimizer
from sanet.train.step import TrainStep

REPO = Path(__file__).resolve().parents[1]
SIZES = {"demo": ["profile=demo"], "paper": ["profile=paper", "model.pretrained=none"]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_speed(params: Params, batch: int, device: torch.device, rounds: int, warmup: int) -> float:
    """Median images/s of the training step of the model `params` describe."""
    classes = max(batch // params.train.instances_per_id, 2)
    model = build_model(params, classes).to(device)
    channels_last = device.type == "cuda" and params.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    step = TrainStep(
        model,
        build_criterion(params),
        build_optimizer(model, params.train),
        device,
        autocast_dtype(params.train.amp, device),
        channels_last,
    )
    images, pids, labels = synthetic_batch(batch, params.input.height, params.input.width, classes, device)
    pids = (torch.arange(batch, device=device) // params.train.instances_per_id) % classes
    labels = torch.nn.functional.avg_pool2d(labels, 4)  # the data set's label size: input / 4
    data = {"images": images, "pids": pids, "mask_labels": labels}
    times = []
    for i in range(warmup + rounds):
        _sync(device)
        start = time.perf_counter()
        step(data)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def data_speed(params: Params, rounds: int) -> float | None:
    """Median images/s of the training DataLoader on the synthetic benchmark (None without data/ and masks/)."""
    from torch.utils.data import DataLoader

    from sanet.data.benchmarks import BenchmarkError, build_benchmark
    from sanet.data.dataset import TrainDataset
    from sanet.data.sampler import IdentityBatchSampler
    from sanet.data.transforms import TrainTransform
    from sanet.masks.errors import MasksError
    from sanet.masks.mask_files import MaskStore

    try:
        benchmark = build_benchmark(params.data.train, REPO / params.data.root)
        store = MaskStore(REPO / params.masks.out_dir, REPO / params.data.root)
        transform = TrainTransform((params.input.height, params.input.width), params.augment)
        dataset = TrainDataset(benchmark.train, store, transform, seed=params.seed)
    except (BenchmarkError, MasksError):
        return None
    sampler = IdentityBatchSampler(
        [r.pid for r in benchmark.train], params.train.batch_size, params.train.instances_per_id, seed=params.seed
    )
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=params.data.workers, persistent_workers=params.data.workers > 0
    )
    rates = []
    for epoch in range(rounds + 1):
        sampler.set_epoch(epoch)
        start, images = time.perf_counter(), 0
        for batch in loader:
            images += len(batch["pids"])
        if epoch:  # the first epoch starts the workers
            rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batch-size", type=int, help="images per step (default: see the module docstring)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-data", action="store_true", help="skip the data-pipeline row")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# training throughput on {name}; median of {args.rounds} steps after {args.warmup} warm-up")
    print(f"{'size':<6} {'variant':<9} {'backbone':<9} {'input':<8} {'batch':>5} {'amp':<5} {'img/s':>8}")
    for size in args.sizes:
        for variant in args.variants:
            params = load_params(REPO / "params.yaml", [*SIZES[size], f"model.variant={variant}"])
            batch = args.batch_size or (params.train.batch_size if size == "demo" or device.type == "cuda" else 8)
            amp = autocast_dtype(params.train.amp, device)
            speed = model_speed(params, batch, device, args.rounds, args.warmup)
            print(
                f"{size:<6} {variant:<9} {params.model.backbone:<9} {params.input.height}x{params.input.width:<4} "
                f"{batch:>5} {str(amp).removeprefix('torch.') if amp else 'off':<5} {speed:>8.1f}"
            )
    if not args.no_data:
        params = load_params(REPO / "params.yaml", SIZES["demo"])
        speed = data_speed(params, args.rounds)
        if speed is None:
            print("data: no synthetic benchmark with masks under data/ and masks/ (run `make demo` first)")
        else:
            print(
                f"data   loader    {params.data.workers} workers {params.input.height}x{params.input.width:<4} "
                f"{params.train.batch_size:>5} {'-':<5} {speed:>8.1f}"
            )


if __name__ == "__main__":
    main()
