"""How much the predicted part masks vary across images.

A segmentation head that has collapsed to one mask for every image (the issue measured a per-cell standard
deviation of 0.009-0.024 for a broken model) still gives features and a visibility, but no information about where
a part is in *this* image: its branches then pool the same cells for every person. Per part, the mean over the mask
cells of the standard deviation of the cell's probability across images says how much the masks move; the mean
probability says how much of the map they cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sanet.contracts.parts import NUM_PARTS, PARTS

__all__ = ["mask_variation"]


def mask_variation(
    mask_probs: torch.Tensor | np.ndarray, parts: Sequence[int] = tuple(range(NUM_PARTS))
) -> dict[str, dict[str, Any]]:
    """Per part (name -> {`std`, `mean`}) of `parts`, from (N, 5, h, w) mask probabilities (sigmoid of the logits).

    `std` is the mean over the h x w cells of the population standard deviation of the cell across the N images (0
    when every image has the same mask, and for a single image); `mean` is the mean probability. Both are computed
    in float64 and rounded to 6 digits; None when there is no image.
    """
    probs = mask_probs.numpy() if isinstance(mask_probs, torch.Tensor) else np.asarray(mask_probs)
    if probs.ndim != 4 or probs.shape[1] != NUM_PARTS:
        raise ValueError(f"mask probabilities must be (N, {NUM_PARTS}, h, w), got {probs.shape}")
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        cells = probs[:, part].reshape(len(probs), -1).astype(np.float64)
        if len(cells) == 0:
            out[PARTS[part]] = {"std": None, "mean": None}
            continue
        out[PARTS[part]] = {
            "std": round(float(cells.std(axis=0).mean()), 6),
            "mean": round(float(cells.mean()), 6),
        }
    return out
