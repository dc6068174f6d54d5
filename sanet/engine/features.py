"""Feature extraction and benchmark evaluation of a model: the shared step of validation and `sanet evaluate`.

Query images come first, then the gallery, as `sanet.metrics.ReIDEvaluator` expects. Extraction runs without
gradients, in eval mode (argmax routing paths, paper section 3.1), with AMP and channels-last on CUDA.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from sanet.data.benchmarks import ImageRecord, ReIDBenchmark
from sanet.data.dataset import ImageDataset
from sanet.data.partial import RowSpan
from sanet.data.transforms import TestTransform
from sanet.metrics.evaluator import build_evaluator
from sanet.metrics.ranking import RankingResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sanet.config import Params
    from sanet.data.holdout import HoldoutSplit

__all__ = [
    "EvaluationResult",
    "Extracted",
    "autocast_context",
    "autocast_dtype",
    "evaluate_benchmark",
    "extract_features",
    "extract_with",
]


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `train.amp` asks for on `device`: None (full precision) off CUDA or with `off`."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device` (from `autocast_dtype`), or nothing when it is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@dataclass
class Extracted:
    """Per-image outputs of the model in eval mode, in record order."""

    features: torch.Tensor  # (N, 5, D) float32, on the CPU
    visibility: torch.Tensor  # (N, 5) bool
    pids: torch.Tensor  # (N,) int64
    camids: torch.Tensor  # (N,) int64
    routing: torch.Tensor | None = None  # (N, layers, 3) int64 for the adaptive AFE
    seconds: float = 0.0
    # (N, 5, h, w) float32 sigmoid mask probabilities at stride 16, on the CPU (`evaluation.diagnostics.masks`
    # measures how much they vary across images: masks that barely change from image to image carry no part information)
    mask_probs: torch.Tensor | None = None

    @property
    def images_per_second(self) -> float:
        return len(self.pids) / self.seconds if self.seconds > 0 else float("nan")


@torch.no_grad()
def extract_features(
    model: nn.Module,
    records: list[ImageRecord],
    size: tuple[int, int],
    device: torch.device,
    batch_size: int = 128,
    workers: int = 0,
    amp: str = "auto",
    progress: bool = False,
    desc: str = "features",
    spans: Sequence[RowSpan | None] | None = None,
) -> Extracted:
    """Run `model` (eval mode) over `records`; returns features, visibility, labels, mask probabilities and the
    routing read-out."""
    loader = DataLoader(
        ImageDataset(records, TestTransform(size), spans),  # spans: in-memory partial views (rows of each image)
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator(),  # no draw from the global RNG: validation leaves training's random stream alone
    )
    was_training = model.training
    model.eval()
    autocast = autocast_context(device, autocast_dtype(amp, device))
    channels_last = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    outputs: dict[str, list[torch.Tensor]] = {
        "features": [],
        "visibility": [],
        "routing": [],
        "mask_probs": [],
        "pids": [],
        "camids": [],
    }
    start = time.perf_counter()
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            images = batch["images"].to(device, non_blocking=True).contiguous(memory_format=channels_last)
            with autocast:
                out = model(images)
            outputs["features"].append(out["features"].float().cpu())
            outputs["visibility"].append(out["visibility"].cpu())
            if "masks" in out:
                outputs["mask_probs"].append(out["masks"].float().sigmoid().cpu())
            if "routing" in out:
                outputs["routing"].append(out["routing"].cpu())
            outputs["pids"].append(batch["pids"])
            outputs["camids"].append(batch["camids"])
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    return Extracted(
        features=torch.cat(outputs["features"]),
        visibility=torch.cat(outputs["visibility"]),
        pids=torch.cat(outputs["pids"]),
        camids=torch.cat(outputs["camids"]),
        routing=torch.cat(outputs["routing"]) if outputs["routing"] else None,
        seconds=seconds,
        mask_probs=torch.cat(outputs["mask_probs"]) if outputs["mask_probs"] else None,
    )


@dataclass
class EvaluationResult:
    """Metrics (fractions) of one benchmark, with the extraction behind them."""

    benchmark: str
    metrics: OrderedDict[str, float]
    num_query: int
    num_gallery: int
    extracted: Extracted
    cmc: list[float] = field(default_factory=list)
    distmat: torch.Tensor | None = None  # (num_query, num_gallery), the distance the metrics ranked
    ranking: RankingResult | None = None  # per-query AP, first-match rank, validity


def extract_with(
    model: nn.Module,
    records: list[ImageRecord],
    params: Params,
    device: torch.device,
    progress: bool,
    desc: str,
    spans: Sequence[RowSpan | None] | None = None,
) -> Extracted:
    """`extract_features` at the input size, batch, workers and AMP setting `params` give."""
    return extract_features(
        model,
        records,
        (params.input.height, params.input.width),
        device,
        batch_size=params.evaluation.batch_size,
        workers=params.data.workers,
        amp=params.train.amp,
        progress=progress,
        desc=desc,
        spans=spans,
    )


def evaluate_benchmark(
    model: nn.Module,
    benchmark: ReIDBenchmark | HoldoutSplit,
    params: Params,
    device: torch.device,
    progress: bool = False,
) -> EvaluationResult:
    """Extract query then gallery features and rank them with the evaluator `params.evaluation` describes."""
    records = [*benchmark.query, *benchmark.gallery]
    extracted = extract_with(model, records, params, device, progress, f"features {benchmark.name}")
    evaluator = build_evaluator(params.evaluation, num_query=len(benchmark.query))
    evaluator.process(
        {
            "features": extracted.features,
            "visibility": extracted.visibility,
            "pids": extracted.pids,
            "camids": extracted.camids,
        }
    )
    metrics = evaluator.evaluate()
    assert evaluator.result is not None
    return EvaluationResult(
        benchmark=benchmark.name,
        metrics=metrics,
        num_query=len(benchmark.query),
        num_gallery=len(benchmark.gallery),
        extracted=extracted,
        cmc=[float(v) for v in evaluator.result.cmc],
        distmat=evaluator.distmat,
        ranking=evaluator.result,
    )
