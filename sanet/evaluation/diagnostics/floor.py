"""The no-network floor: rank people by the colour of their pixels, under the benchmark's own protocol.

A re-ID model is only interesting where it beats what needs no network at all. On the synthetic benchmark, whose
pedestrians differ mostly by the colours of their clothes, a colour histogram can rank well; on the real benchmarks
it is a low but honest floor. Next to it, `chance_rank1` is the Rank-1 a random ranking gets on average.

For every image, the person's pixels are the label "global" mask of the mask stage (`sanet.masks.mask_files`, stored at
a fixed size over the whole image), resized to the image's own size with nearest-neighbour sampling. Their joint RGB
histogram (`bins` per channel, `bins`^3 cells, default 8 x 8 x 8) is L1-normalised. An image whose global mask is
empty (nobody found) falls back to all its pixels; `FloorResult.fallbacks` counts them.

Distance: the **Hellinger distance** H(p, q) = ||sqrt(p) - sqrt(q)||_2 / sqrt(2) (in [0, 1]; a monotone function of
the Bhattacharyya coefficient, and a true metric). It is exactly the Euclidean distance between the vectors
sqrt(p) / sqrt(2), so the ranking is the project's own (`sanet.metrics.ReIDEvaluator`, `distance: euclidean`, no
re-ranking), with the benchmark's camera rule. Everything is deterministic: images in record order, integer counts.
The functions need only image records and a mask store, no model.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from sanet.contracts.parts import GLOBAL_INDEX
from sanet.data.benchmarks import ImageRecord
from sanet.data.transforms import decode_image
from sanet.masks.mask_files import MaskStore
from sanet.metrics.evaluator import ReIDEvaluator

__all__ = [
    "DEFAULT_BINS",
    "DISTANCE",
    "FloorResult",
    "chance_rank1",
    "colour_histogram_floor",
    "colour_histograms",
    "person_histogram",
    "resize_nearest",
]

DEFAULT_BINS = 8
DISTANCE = "hellinger"


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`mask` (h, w) resized to `size` (H, W) by nearest-neighbour sampling at the output pixels' centres."""
    mask = np.asarray(mask)
    height, width = size
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def person_histogram(image: np.ndarray, mask: np.ndarray, bins: int = DEFAULT_BINS) -> tuple[np.ndarray, bool]:
    """The L1-normalised joint RGB histogram (`bins`^3 float64) of the pixels of `image` where `mask` is set.

    `image` is (3, H, W) uint8 RGB, as `sanet.data.transforms.decode_image` gives it; `mask` (h, w), any size
    (resized to H x W, nearest). Cell index r * bins^2 + g * bins + b of the channels' bins. Returns the histogram
    and whether the mask was empty, in which case every pixel of the image counts.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W) RGB, got shape {image.shape}")
    height, width = image.shape[1:]
    pixels = image.reshape(3, -1).T
    keep = resize_nearest(mask, (height, width)).reshape(-1) > 0
    empty = not bool(keep.any())
    if empty:
        keep = np.ones_like(keep)
    levels = (pixels[keep].astype(np.int64) * bins) // 256
    cells = (levels[:, 0] * bins + levels[:, 1]) * bins + levels[:, 2]
    counts = np.bincount(cells, minlength=bins**3).astype(np.float64)
    return counts / counts.sum(), empty


def colour_histograms(
    paths: Sequence[str], store: MaskStore, bins: int = DEFAULT_BINS, progress: bool = False
) -> tuple[np.ndarray, int]:
    """(N, bins^3) person histograms of the images at `paths` (label global masks from `store`), and the fallbacks.

    Raises:
        MasksError: the store has no masks for an image; CorruptImageError: an image does not decode.
    """
    histograms = np.zeros((len(paths), bins**3), dtype=np.float64)
    fallbacks = 0
    for i, path in enumerate(tqdm(paths, desc="colour histograms", unit="image", disable=not progress, leave=False)):
        mask = store.masks(path)[GLOBAL_INDEX]
        histograms[i], empty = person_histogram(decode_image(path).numpy(), mask, bins)
        fallbacks += empty
    return histograms, fallbacks


def chance_rank1(
    q_pids: Sequence[int], g_pids: Sequence[int], q_camids: Sequence[int], g_camids: Sequence[int]
) -> float:
    """The expected Rank-1 of a uniformly random ranking under the camera rule (`sanet.metrics.ranking`).

    Per query, the gallery entries with its pid and camera are removed; the chance that the first of the rest is a
    match is (matches) / (entries kept). The mean is over the queries that have a match, as the metrics' is
    (1 / number of gallery identities when every identity has as many gallery images). NaN when none has.
    """
    by_pid = Counter(int(p) for p in g_pids)
    by_pid_cam = Counter((int(p), int(c)) for p, c in zip(g_pids, g_camids, strict=True))
    total = len(g_pids)
    chances = []
    for pid, cam in zip(q_pids, q_camids, strict=True):
        removed = by_pid_cam[(int(pid), int(cam))]
        matches = by_pid[int(pid)] - removed
        if matches > 0:
            chances.append(matches / (total - removed))
    return float(np.mean(chances)) if chances else math.nan


@dataclass(frozen=True)
class FloorResult:
    """The floor's metrics (fractions: rank1, rank3, rank5, rank10, mAP, mINP), settings and fallback count."""

    metrics: OrderedDict[str, float]
    bins: int
    fallbacks: int
    distance: str = DISTANCE


def colour_histogram_floor(
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    store: MaskStore,
    bins: int = DEFAULT_BINS,
    max_rank: int = 50,
    progress: bool = False,
) -> FloorResult:
    """Rank `gallery` for every image of `query` by the Hellinger distance of their person colour histograms.

    Raises:
        MasksError: the store lacks masks for an image; NoValidQueryError: no query has a match.
    """
    records = [*query, *gallery]
    histograms, fallbacks = colour_histograms([r.path for r in records], store, bins, progress)
    vectors = torch.from_numpy(np.sqrt(histograms) / math.sqrt(2.0)).float()
    evaluator = ReIDEvaluator(len(query), distance="euclidean", max_rank=max_rank)
    evaluator.process(
        {
            "features": vectors,
            "pids": torch.tensor([r.pid for r in records], dtype=torch.int64),
            "camids": torch.tensor([r.camid for r in records], dtype=torch.int64),
        }
    )
    return FloorResult(metrics=evaluator.evaluate(), bins=bins, fallbacks=fallbacks)
