"""How fast evaluation is at Market-1501 scale, against two yardsticks measured in the same run.

Builds random Market-scale inputs (3,368 queries, 15,913 gallery images, 751 identities, 6 cameras, 5 parts x 2,048
dims, about 80 % of parts visible) and prints:

* the seconds of `evaluate_ranking` (CMC, mAP, mINP) and their ratio to one row-wise `np.argsort` of the same
  matrix (target: at most 0.25; a full sort followed by a Python loop, the usual evaluator, is about 2.6);
* the seconds and GFLOP/s of `part_distance` (paper Eq. 7) and the GFLOP/s of plain float32 matrix products of the
  same shapes (target: at least 80 % of that rate);
* the peak memory each step needs beyond its inputs and output (the part distance must stay well under 4 GiB).

Usage: python benchmarks/eval_speed.py [--device cuda] [--queries N --gallery N ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sanet.metrics.distance import part_distance
from sanet.metrics.ranking import evaluate_ranking

GIB = 2**30


class PeakMemory:
    """Peak memory of a block beyond what was in use when it started: CUDA allocator stats, or Linux's VmHWM."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.extra_bytes: float = float("nan")

    @staticmethod
    def _status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            try:  # writing 5 to clear_refs resets the high-water mark of this process (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
                self._start = self._status("VmRSS")
            except OSError:
                self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._start is not None:
            self.extra_bytes = self._status("VmHWM") - self._start


def timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> tuple[float, Any]:
    """Best wall time of `repeat` calls (after one warm-up call) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def matmuls(q_parts: list[torch.Tensor], g_parts: list[torch.Tensor], out: torch.Tensor) -> None:
    """The yardstick: one plain float32 (Q, D) x (D, G) product per part, into a preallocated output."""
    for q, g in zip(q_parts, g_parts, strict=True):
        torch.mm(q, g.T, out=out)


def market_like(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Random features, visibility, pids and cameras with Market-1501's sizes."""
    rng = np.random.default_rng(args.seed)
    g_pids = rng.integers(0, args.ids, args.gallery)
    q_pids = rng.choice(np.unique(g_pids), args.queries)
    gen = torch.Generator().manual_seed(args.seed)
    q_feats = torch.randn(args.queries, args.parts, args.dim, generator=gen)
    g_feats = torch.randn(args.gallery, args.parts, args.dim, generator=gen)
    q_vis = torch.rand(args.queries, args.parts, generator=gen) < 0.8
    g_vis = torch.rand(args.gallery, args.parts, generator=gen) < 0.8
    q_vis[:, -1] = g_vis[:, -1] = True  # the global branch always sees the person
    return {
        "q_feats": q_feats.to(device),
        "g_feats": g_feats.to(device),
        "q_vis": q_vis.to(device),
        "g_vis": g_vis.to(device),
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_camids": rng.integers(0, args.cameras, args.queries),
        "g_camids": rng.integers(0, args.cameras, args.gallery),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=15913)
    parser.add_argument("--ids", type=int, default=751)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--parts", type=int, default=5)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions after a warm-up (best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
        f"{args.queries} queries x {args.gallery} gallery, {args.ids} ids, {args.cameras} cameras, "
        f"{args.parts} parts x {args.dim} dims"
    )
    data = market_like(args, device)
    num_q, num_g = args.queries, args.gallery
    flop = 2.0 * args.parts * num_q * num_g * args.dim

    def distance() -> torch.Tensor:
        return part_distance(data["q_feats"], data["q_vis"], data["g_feats"], data["g_vis"])

    with PeakMemory(device) as mem_dist:
        distmat = distance()
    out_bytes = distmat.numel() * distmat.element_size()
    extra_dist = mem_dist.extra_bytes - out_bytes
    del distmat
    t_dist, distmat = timed(distance, device, args.repeat)

    buffer = torch.empty(num_q, num_g, device=device)
    q_parts = [data["q_feats"][:, i].contiguous() for i in range(args.parts)]
    g_parts = [data["g_feats"][:, i].contiguous() for i in range(args.parts)]
    t_mm, _ = timed(partial(matmuls, q_parts, g_parts, buffer), device, args.repeat)
    del buffer, q_parts, g_parts  # the yardstick's copies are not needed for the ranking

    dist_np = distmat.cpu().numpy()
    ranking_input = distmat if device.type == "cuda" else dist_np

    def ranking() -> Any:
        return evaluate_ranking(ranking_input, data["q_pids"], data["g_pids"], data["q_camids"], data["g_camids"])

    with PeakMemory(device) as mem_rank:
        ranking()
    t_rank, result = timed(ranking, device, args.repeat)
    t_sort, _ = timed(lambda: np.argsort(dist_np, axis=1), torch.device("cpu"), max(1, args.repeat - 1))

    gflops_dist, gflops_mm = flop / t_dist / 1e9, flop / t_mm / 1e9
    print(f"ranking metrics:  {t_rank:7.3f} s   (mAP {result.mAP:.4f}, {result.num_valid_queries} valid queries)")
    print(f"np.argsort rows:  {t_sort:7.3f} s   ratio ranking / argsort = {t_rank / t_sort:.3f}   (target <= 0.25)")
    print(f"part_distance:    {t_dist:7.3f} s   {gflops_dist:7.1f} GFLOP/s")
    print(
        f"float32 matmuls:  {t_mm:7.3f} s   {gflops_mm:7.1f} GFLOP/s   "
        f"part_distance at {100 * gflops_dist / gflops_mm:.0f} % of it   (target >= 80 %)"
    )
    print(
        f"peak extra memory: part_distance {extra_dist / GIB:.2f} GiB beyond inputs and output "
        f"({out_bytes / GIB:.2f} GiB output; target well under 4 GiB), "
        f"ranking {mem_rank.extra_bytes / GIB:.2f} GiB"
    )


if __name__ == "__main__":
    main()
