"""The ranked-list picture of an evaluation: a few queries, each with its top gallery matches framed right or wrong.

Researchers look at it to see what a model confuses (same clothes? same camera? the occluder?). The gallery order is
the evaluation's own: the same distance, the same protocol (gallery entries with the query's pid and camera are left
out), ties broken by gallery index as in `sanet.metrics.ranking`. Drawn with Pillow, so the bytes are the same for the
same input (DVC compares hashes).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from sanet.data.benchmarks import ImageRecord, read_image
from sanet.infra.atomic import atomic_write

__all__ = ["RIGHT", "WRONG", "pick_queries", "ranked_gallery", "write_ranked_lists"]

RIGHT = (30, 160, 60)
WRONG = (210, 40, 40)
QUERY = (60, 90, 200)
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_FRAME = 3
_GAP = 4
_LABEL = 14


def pick_queries(valid: np.ndarray, count: int) -> list[int]:
    """`count` query indices spread evenly over the valid queries (those with a match), always the same ones."""
    candidates = np.flatnonzero(valid)
    if len(candidates) == 0:
        return []
    positions = np.linspace(0, len(candidates) - 1, num=min(count, len(candidates)))
    return sorted({int(candidates[round(p)]) for p in positions})


def ranked_gallery(
    distances: torch.Tensor, q_pid: int, q_camid: int, g_pids: np.ndarray, g_camids: np.ndarray, top_k: int
) -> list[int]:
    """Gallery indices of one query's first `top_k` entries, after the protocol's same-pid-same-camera removal."""
    order = torch.sort(distances.float().cpu(), stable=True).indices.numpy()
    kept = order[~((g_pids[order] == q_pid) & (g_camids[order] == q_camid))]
    return [int(i) for i in kept[:top_k]]


def _tile(path: str | Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    height, width = size
    tile = Image.new("RGB", (width + 2 * _FRAME, height + 2 * _FRAME), colour)
    tile.paste(read_image(path).convert("RGB").resize((width, height), Image.Resampling.BILINEAR), (_FRAME, _FRAME))
    return tile


def write_ranked_lists(
    path: str | Path,
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    distmat: torch.Tensor,
    valid: np.ndarray,
    num_queries: int = 6,
    top_k: int = 10,
    size: tuple[int, int] = (128, 64),
    title: str = "",
) -> Path:
    """Draw `num_queries` queries (blue frame) and their `top_k` gallery entries (green: same identity, red: not).

    Under each gallery image: its rank and distance. `valid` marks queries with a match in the gallery (from the
    ranking result); the picture shows only those. Returns the PNG's path (written atomically).
    """
    g_pids = np.array([r.pid for r in gallery])
    g_camids = np.array([r.camid for r in gallery])
    rows = pick_queries(np.asarray(valid, dtype=bool), num_queries)
    height, width = size
    cell_w, cell_h = width + 2 * _FRAME + _GAP, height + 2 * _FRAME + _LABEL + _GAP
    header = _LABEL + _GAP if title else 0
    canvas = Image.new("RGB", (_GAP + cell_w * (top_k + 1) + _GAP, header + _GAP + cell_h * max(len(rows), 1)))
    canvas.paste(_BACKGROUND, (0, 0, *canvas.size))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((_GAP, _GAP // 2), title, fill=_TEXT, font=font)
    if not rows:
        draw.text((_GAP, header + _GAP), "no query has a match in the gallery", fill=WRONG, font=font)
    for row, q in enumerate(rows):
        top = header + _GAP + row * cell_h
        record = query[q]
        canvas.paste(_tile(record.path, size, QUERY), (_GAP, top))
        draw.text((_GAP, top + height + 2 * _FRAME + 1), f"q pid {record.pid}", fill=_TEXT, font=font)
        for rank, g in enumerate(ranked_gallery(distmat[q], record.pid, record.camid, g_pids, g_camids, top_k), 1):
            left = _GAP + rank * cell_w
            colour = RIGHT if g_pids[g] == record.pid else WRONG
            canvas.paste(_tile(gallery[g].path, size, colour), (left, top))
            label = f"{rank}: {float(distmat[q, g]):.2f}"
            draw.text((left, top + height + 2 * _FRAME + 1), label, fill=colour, font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=False)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
