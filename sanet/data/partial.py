"""Partial views of a person image: the geometry shared by the training augmentation and the held-out partial queries.

A partial person image (Partial-REID, Partial-iLIDS) is a vertical extent of a holistic one, usually from the top
(the legs are cut away by the frame or an occluder), which every benchmark protocol then stretches to the network's
full input size. Two operations make such views from a holistic image and keep its part-mask labels true:

- :func:`crop_rows` keeps rows ``[top, top + height)`` (image and masks alike); resized back to the input size this is
  VPM's (Sun et al., CVPR 2019) random crop: the parts in the kept rows grow, the others leave the labels entirely;
- :func:`occlude_rows` paints rows ``[top, bottom)`` with one colour and clears them from every mask, as HPNet's
  part occlusion clears the labels of the parts it hides, so an absent part is absent in the labels too.

:func:`sample_extent` draws where such a view lies from a seeded ``torch.Generator`` (never a global one), so a given
seed gives the same view in every process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RowSpan", "crop_rows", "occlude_rows", "sample_extent"]


@dataclass(frozen=True)
class RowSpan:
    """Rows ``[top, top + height)`` of an image of some height (pixels)."""

    top: int
    height: int

    @property
    def bottom(self) -> int:
        return self.top + self.height


def sample_extent(
    generator: torch.Generator, rows: int, min_extent: float, max_extent: float, from_top: float
) -> RowSpan:
    """A vertical extent of ``rows`` rows: a fraction in [min_extent, max_extent] of them, starting at the top row
    with probability ``from_top`` and anywhere that fits otherwise (the synthetic and real partial sets are mostly
    upper bodies)."""
    if not 0 < min_extent <= max_extent <= 1:
        raise ValueError(f"need 0 < min_extent <= max_extent <= 1, got {min_extent}, {max_extent}")
    fraction = min_extent + (max_extent - min_extent) * torch.rand((), generator=generator, dtype=torch.float64).item()
    height = min(rows, max(1, round(rows * fraction)))
    top_draw = torch.rand((), generator=generator).item()
    if top_draw < from_top or height == rows:
        top = 0
    else:
        top = int(torch.randint(0, rows - height + 1, (), generator=generator).item())
    return RowSpan(top, height)


def crop_rows(image: Tensor, span: RowSpan, masks: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Rows ``span`` of a (C, H, W) image and of its (P, H, W) masks (same height), or of the image alone."""
    rows = slice(span.top, span.bottom)
    if masks is not None and masks.shape[-2] != image.shape[-2]:
        raise ValueError(f"masks of height {masks.shape[-2]} do not match the image's {image.shape[-2]} rows")
    return image[:, rows], (masks[:, rows] if masks is not None else None)


def occlude_rows(image: Tensor, masks: Tensor, span: RowSpan, colour: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Paint rows ``span`` of a uint8 (3, H, W) image with ``colour`` and clear them from the (P, H, W) masks."""
    image, masks = image.clone(), masks.clone()
    rows = slice(span.top, span.bottom)
    image[:, rows] = torch.tensor(colour, dtype=image.dtype).view(3, 1, 1)
    masks[:, rows] = 0
    return image, masks
