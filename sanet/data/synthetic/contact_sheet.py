"""The contact sheet: a picture of the synthetic benchmark for people (identities across cameras, partial and
occluded views, keypoints), `sanet synth --preview`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sanet.config import SynthParams
from sanet.contracts.keypoints import COCO_SKELETON
from sanet.data.synthetic.layouts import SyntheticBenchmark
from sanet.data.synthetic.people import Rendered, add_occluder, crop_partial
from sanet.infra.atomic import atomic_write


def _draw_keypoints(image: Image.Image, kps: np.ndarray, scale: float) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for a, b in COCO_SKELETON:
        ka, kb = kps[a - 1], kps[b - 1]
        if ka[2] > 0 and kb[2] > 0:
            draw.line([(ka[0] * scale, ka[1] * scale), (kb[0] * scale, kb[1] * scale)], fill=(255, 255, 0), width=1)
    for x, y, v in kps:
        if v > 0:
            colour = (0, 255, 0) if v == 2 else (255, 0, 0)
            draw.ellipse([x * scale - 2, y * scale - 2, x * scale + 2, y * scale + 2], fill=colour)
    return image


def contact_sheet(params: SynthParams, identities: int = 6, cell_height: int = 128) -> Image.Image:
    """A picture of the benchmark for people: identities across cameras, partial and occluded views, keypoints.

    Rows are identities. Columns: Market-1501 cameras 1-6, then Partial-REID whole / partial / occluded with their
    COCO-17 keypoints drawn (green visible, red labelled but hidden), then the Partial-iLIDS gallery, FPR probe (-O)
    and DSR probe (-P).
    """
    gen = SyntheticBenchmark(params)
    cell_w = cell_height // 2
    headers = ["c1", "c2", "c3", "c4", "c5", "c6", "whole", "partial", "occl.", "gallery", "-O", "-P"]
    gap, top_pad = 4, 16
    sheet = Image.new(
        "RGB", (len(headers) * (cell_w + gap) + gap, top_pad + identities * (cell_height + gap)), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(headers):
        draw.text((gap + c * (cell_w + gap) + 2, 2), text, fill=(0, 0, 0))

    def put(row: int, col: int, sample: Rendered, keypoints: bool = False) -> None:
        img = sample.image
        scale = min(cell_w / img.width, cell_height / img.height)
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.Resampling.BILINEAR)
        if keypoints:
            img = _draw_keypoints(img, sample.keypoints, scale)
        sheet.paste(img, (gap + col * (cell_w + gap), top_pad + row * (cell_height + gap)))

    pids = gen.pids("market", identities, 1501)
    for row, pid in enumerate(pids):
        for cam in range(1, 7):
            put(row, cam - 1, gen.render("market", pid, cam, cam))
        rng = gen.image_rng("partial_reid", row + 1, 100)
        put(row, 6, gen.render("partial_reid", row + 1, 1, 0), keypoints=True)
        put(row, 7, crop_partial(gen.render("partial_reid", row + 1, 3, 100), rng), keypoints=True)
        put(row, 8, add_occluder(gen.render("partial_reid", row + 1, 4, 200), rng)[0], keypoints=True)
        put(row, 9, gen.render("partial_ilids", row + 1, 1, 0))
        rng = gen.image_rng("partial_ilids", row + 1, 50)
        occluded, top = add_occluder(gen.render("partial_ilids", row + 1, 2, 1), rng)
        put(row, 10, occluded)
        put(row, 11, occluded.crop((0, 0, gen.w, max(8, top))))
    return sheet


def write_contact_sheet(path: str | Path, params: SynthParams) -> Path:
    """Save `contact_sheet` as a PNG, atomically."""
    sheet = contact_sheet(params)
    return atomic_write(path, lambda handle: sheet.save(handle, format="PNG"))
