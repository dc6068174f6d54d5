"""Overlays for people: a grid of benchmark images with their stored part masks drawn in colour.

One row per benchmark split, a few images each (evenly spaced through the split, so the same run gives the same
sheet). Every image is resized to the stored masks' aspect ratio, as training resizes it, and the masks are scaled up
onto it: head red, upper body green, lower body blue, feet yellow, each blended at 45 %; the whole-body mask is the
white outline. Dots are the keypoints the masks were drawn from (white: confident, grey: below the threshold). A cell
with a red frame is an image where the source found nobody.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sanet.contracts.parts import LOCAL_PARTS, PARTS
from sanet.data.benchmarks import read_image
from sanet.infra.atomic import atomic_write
from sanet.masks.mask_files import MaskStore

__all__ = ["PART_COLOURS", "render_preview", "write_preview"]

#: Overlay colour of each local part (the global mask is drawn as an outline).
PART_COLOURS: dict[str, tuple[int, int, int]] = {
    "head": (230, 40, 40),
    "upper_body": (40, 200, 60),
    "lower_body": (50, 90, 235),
    "feet": (245, 210, 30),
}
_ALPHA = 0.45
_LABEL_WIDTH = 170
_PAD = 4


def _overlay(image: Image.Image, masks: np.ndarray, cell: tuple[int, int]) -> Image.Image:
    """The image resized to `cell` (width, height) with its masks blended in and the global outline drawn."""
    base = np.asarray(image.resize(cell, Image.Resampling.BILINEAR), dtype=np.float32)
    scaled = np.stack(
        [np.asarray(Image.fromarray(m * 255).resize(cell, Image.Resampling.NEAREST)) > 127 for m in masks]
    )
    for part in LOCAL_PARTS:
        sel = scaled[PARTS.index(part)]
        base[sel] = (1 - _ALPHA) * base[sel] + _ALPHA * np.array(PART_COLOURS[part], dtype=np.float32)
    body = scaled[PARTS.index("global")]
    edge = body & ~(
        np.pad(body, 1)[2:, 1:-1] & np.pad(body, 1)[:-2, 1:-1] & np.pad(body, 1)[1:-1, 2:] & np.pad(body, 1)[1:-1, :-2]
    )
    base[edge] = 255
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def render_preview(
    store: MaskStore,
    root: str | Path,
    splits: Mapping[str, Sequence[str]],
    per_split: int = 8,
    cell_height: int = 144,
    min_confidence: float = 0.3,
) -> Image.Image:
    """A contact sheet: one row per entry of `splits` ({row label: image keys}), `per_split` images each."""
    root = Path(root)
    any_folder = next(iter(store.folders()), None)
    aspect = 1 / 3 if any_folder is None else store.folder(any_folder).width / store.folder(any_folder).height
    cell = (max(16, round(cell_height * aspect)), cell_height)
    rows = [(label, list(keys)) for label, keys in splits.items() if keys]
    legend = 22
    sheet = Image.new(
        "RGB",
        (_LABEL_WIDTH + per_split * (cell[0] + _PAD) + _PAD, legend + len(rows) * (cell[1] + _PAD) + _PAD),
        (24, 24, 24),
    )
    draw = ImageDraw.Draw(sheet)
    x = _PAD
    for part, colour in [*PART_COLOURS.items(), ("whole body (outline)", (255, 255, 255))]:
        draw.rectangle((x, 6, x + 10, 16), fill=colour)
        draw.text((x + 14, 5), part.replace("_", " "), fill=(230, 230, 230))
        x += 14 + 7 * len(part) + 16
    for r, (label, keys) in enumerate(rows):
        top = legend + _PAD + r * (cell[1] + _PAD)
        draw.text((_PAD, top + cell[1] // 2 - 12), f"{label}\n{len(keys)} images", fill=(230, 230, 230))
        picks = np.unique(np.linspace(0, len(keys) - 1, num=min(per_split, len(keys))).round().astype(int))
        for c, i in enumerate(picks):
            key = keys[int(i)]
            folder, _, name = key.rpartition("/")
            stored = store.folder(folder)
            row = stored.rows[name]
            image = read_image(root / key)
            tile = _overlay(image, stored.masks(row), cell)
            tile_draw = ImageDraw.Draw(tile)
            kps = np.array(stored.keypoints[row])
            sx, sy = cell[0] / image.width, cell[1] / image.height
            for kx, ky, conf in kps:
                if conf > 0:
                    fill = (255, 255, 255) if conf >= min_confidence else (120, 120, 120)
                    tile_draw.ellipse((kx * sx - 1.5, ky * sy - 1.5, kx * sx + 1.5, ky * sy + 1.5), fill=fill)
            if row in stored.no_person_rows:
                tile_draw.rectangle((0, 0, cell[0] - 1, cell[1] - 1), outline=(255, 0, 0), width=2)
            sheet.paste(tile, (_LABEL_WIDTH + c * (cell[0] + _PAD), top))
    return sheet


def write_preview(
    path: str | Path, store: MaskStore, root: str | Path, splits: Mapping[str, Sequence[str]], **kw
) -> Path:
    """Render :func:`render_preview` and save it as PNG, atomically (parent folders are created)."""
    image = render_preview(store, root, splits, **kw)
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))
