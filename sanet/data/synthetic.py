"""The synthetic benchmark: six real benchmark layouts filled with procedurally drawn pedestrians.

Real ReID benchmarks cannot be downloaded on build machines and their licences forbid redistribution, so the project
generates its own small benchmark in exactly the real layouts (DESIGN sections 2 and 3); the same loaders, mask stage
and evaluation protocols then run on it unchanged.

What makes it a re-identification problem rather than a colour lookup:

* an identity fixes a combination of cues drawn from small palettes: top colour and pattern (solid, stripes, checks,
  two-tone), sleeve length, bottom colour and style (trousers, shorts, skirt), shoes, skin and hair, body build and
  height, and an accessory (backpack, shoulder bag, hat). Palettes are small on purpose, so many identities share a
  top colour and only the combination separates them;
* a camera fixes background (gradient and texture), lighting (brightness and colour cast), blur, sensor noise and a
  preferred viewpoint (front, back, left or right side), so the same person looks different across cameras;
* partial images are crops of a random vertical extent (the scale variation that SANet targets) and occluded images
  paste an occluder over part of the body.

Every image gets COCO-17 keypoints (visibility 2: visible, 1: labelled but hidden by an occluder or the body's own far
side, 0: outside the image) in `keypoints_coco17.json` inside each benchmark folder; image paths in it are relative
to that folder. The generator is deterministic: each image draws from its own seed sequence
(seed, benchmark, identity, image), and JPEG encoding uses fixed settings, so a seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from sanet.atomic import atomic_write
from sanet.config import SynthParams
from sanet.errors import OverwriteError  # the CLI catches it without importing this module (numpy)

GENERATOR_VERSION = 1
MARKER_FILE = "SYNTHETIC.json"
KEYPOINTS_FILE = "keypoints_coco17.json"
SUPERSAMPLE = 2

COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
COCO_SKELETON = (
    (16, 14),
    (14, 12),
    (17, 15),
    (15, 13),
    (12, 13),
    (6, 12),
    (7, 13),
    (6, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (9, 11),
    (2, 3),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
)
KP = {name: i for i, name in enumerate(COCO_KEYPOINTS)}

# Folder names of the real releases (DESIGN section 2).
MARKET_DIR = "Market-1501-v15.09.15"
DUKE_DIR = "DukeMTMC-reID"
PARTIAL_REID_DIR = "Partial-REID_Dataset"
ILIDS_P_DIR = "Partial_iLIDS"
ILIDS_O_DIR = "PartialILIDS"
DATASET_DIRS = (MARKET_DIR, DUKE_DIR, PARTIAL_REID_DIR, ILIDS_P_DIR, ILIDS_O_DIR)

RGB = tuple[int, int, int]

CLOTH_PALETTE: tuple[RGB, ...] = (
    (25, 25, 28),
    (235, 235, 230),
    (128, 128, 128),
    (200, 30, 35),
    (110, 20, 30),
    (40, 80, 200),
    (25, 35, 90),
    (40, 140, 60),
    (100, 110, 40),
    (230, 200, 40),
    (235, 120, 30),
    (120, 50, 150),
    (235, 140, 180),
    (120, 75, 40),
    (215, 195, 150),
    (30, 140, 140),
)
SKIN_PALETTE: tuple[RGB, ...] = ((245, 210, 180), (225, 180, 140), (190, 140, 100), (140, 95, 65), (95, 65, 45))
HAIR_PALETTE: tuple[RGB, ...] = ((20, 15, 10), (70, 45, 25), (130, 90, 50), (200, 170, 110), (150, 150, 150))
TOP_PATTERNS = ("solid", "solid", "hstripes", "vstripes", "checks", "split")
BOTTOM_STYLES = ("trousers", "trousers", "shorts", "skirt")
ACCESSORIES = ("none", "none", "backpack", "bag", "hat")
VIEWS = ("front", "back", "left", "right")
TEXTURES = ("plain", "bricks", "vstripes", "noise", "tiles")

BENCH_CODES = {"market": 1, "duke": 2, "partial_reid": 3, "partial_ilids": 4}


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one (benchmark, identity, image): order of generation never matters."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _pick(rng: np.random.Generator, items: tuple):
    return items[int(rng.integers(len(items)))]


@dataclass(frozen=True)
class Identity:
    """Everything that makes a person recognisable across cameras."""

    pid: int
    skin: RGB
    hair: RGB
    long_hair: bool
    top: RGB
    top2: RGB
    top_pattern: str
    long_sleeves: bool
    bottom: RGB
    bottom_style: str
    shoes: RGB
    build: float
    height: float
    accessory: str
    accessory_colour: RGB

    @classmethod
    def sample(cls, seed: int, bench: int, pid: int) -> Identity:
        rng = _rng(seed, bench, pid, 0)
        top = _pick(rng, CLOTH_PALETTE)
        top2 = _pick(rng, tuple(c for c in CLOTH_PALETTE if c != top))
        return cls(
            pid=pid,
            skin=_pick(rng, SKIN_PALETTE),
            hair=_pick(rng, HAIR_PALETTE),
            long_hair=bool(rng.random() < 0.3),
            top=top,
            top2=top2,
            top_pattern=_pick(rng, TOP_PATTERNS),
            long_sleeves=bool(rng.random() < 0.5),
            bottom=_pick(rng, CLOTH_PALETTE),
            bottom_style=_pick(rng, BOTTOM_STYLES),
            shoes=_pick(rng, CLOTH_PALETTE[:3] + CLOTH_PALETTE[13:15]),
            build=float(rng.uniform(0.8, 1.25)),
            height=float(rng.uniform(0.86, 1.0)),
            accessory=_pick(rng, ACCESSORIES),
            accessory_colour=_pick(rng, CLOTH_PALETTE),
        )


@dataclass(frozen=True)
class Camera:
    """A camera's look: background, light, colour cast, blur, noise and the viewpoint it mostly sees."""

    index: int
    sky: RGB
    ground: RGB
    horizon: float
    texture: str
    texture_colour: RGB
    light: float
    tint: tuple[float, float, float]
    blur: float
    noise: float
    view_probs: tuple[float, float, float, float]

    @classmethod
    def sample(cls, seed: int, bench: int, index: int) -> Camera:
        rng = _rng(seed, bench, 100_000 + index)
        base = rng.integers(60, 200, size=3)
        sky = tuple(int(v) for v in np.clip(base + rng.integers(-30, 30, size=3), 0, 255))
        ground = tuple(int(v) for v in np.clip(base * rng.uniform(0.4, 0.8), 0, 255))
        texture_colour = tuple(int(v) for v in np.clip(np.array(sky) * rng.uniform(0.6, 1.3), 0, 255))
        probs = rng.dirichlet([1.0, 1.0, 0.6, 0.6])
        return cls(
            index=index,
            sky=sky,  # type: ignore[arg-type]
            ground=ground,  # type: ignore[arg-type]
            horizon=float(rng.uniform(0.55, 0.8)),
            texture=_pick(rng, TEXTURES),
            texture_colour=texture_colour,  # type: ignore[arg-type]
            light=float(rng.uniform(0.7, 1.25)),
            tint=tuple(float(v) for v in rng.uniform(0.85, 1.15, size=3)),  # type: ignore[arg-type]
            blur=float(rng.uniform(0.0, 0.9)),
            noise=float(rng.uniform(0.0, 6.0)),
            view_probs=tuple(float(p) for p in probs),  # type: ignore[arg-type]
        )


@dataclass
class Rendered:
    """One generated image and its keypoints (17 x 3: x, y, visibility) in its own pixel coordinates."""

    image: Image.Image
    keypoints: np.ndarray

    def crop(self, box: tuple[int, int, int, int]) -> Rendered:
        """Crop to `box` (left, top, right, bottom); keypoints outside the crop become unlabelled (0, 0, 0)."""
        left, top, right, bottom = box
        kps = self.keypoints.copy()
        kps[:, 0] -= left
        kps[:, 1] -= top
        outside = (kps[:, 0] < 0) | (kps[:, 1] < 0) | (kps[:, 0] >= right - left) | (kps[:, 1] >= bottom - top)
        kps[outside | (kps[:, 2] == 0)] = 0
        return Rendered(self.image.crop(box), kps)


def _background(cam: Camera, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    ys = np.linspace(0.0, 1.0, height)[:, None, None]
    sky = np.array(cam.sky, dtype=np.float32)
    wall = sky * (1.05 - 0.25 * ys)
    img = np.broadcast_to(wall, (height, width, 3)).copy()
    tex = np.array(cam.texture_colour, dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    offset = int(rng.integers(0, 64))
    if cam.texture == "bricks":
        row = (yy + offset) // 12
        mortar = ((yy + offset) % 12 < 2) | (((xx + (row % 2) * 10 + offset) % 20) < 2)
        img[mortar] = tex * 0.7
    elif cam.texture == "vstripes":
        img[((xx + offset) // 9) % 2 == 0] = tex
    elif cam.texture == "tiles":
        img[(((xx + offset) // 16) + ((yy + offset) // 16)) % 2 == 0] = tex
    elif cam.texture == "noise":
        img += rng.normal(0.0, 18.0, size=(height, width, 1))
    horizon = int(height * (cam.horizon + rng.uniform(-0.05, 0.05)))
    ground = np.array(cam.ground, dtype=np.float32)
    img[horizon:] = ground * (0.9 + 0.2 * ys[horizon:])
    return np.clip(img, 0, 255)


def _stripes(width: int, height: int, a: RGB, b: RGB, period: int, vertical: bool, checks: bool) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width]
    phase = (xx // period + yy // period) if checks else ((xx if vertical else yy) // period)
    sel = phase % 2 == 0
    arr = np.where(sel[..., None], np.array(a, np.uint8), np.array(b, np.uint8)).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


class _Painter:
    """Draws one pedestrian on a supersampled canvas and records the COCO-17 keypoints it drew."""

    def __init__(self, canvas: Image.Image, ident: Identity, view: str, rng: np.random.Generator):
        self.canvas = canvas
        self.draw = ImageDraw.Draw(canvas)
        self.ident = ident
        self.view = view
        self.rng = rng
        w, h = canvas.size
        self.hp = h * rng.uniform(0.84, 0.93) * ident.height
        self.y0 = (h - self.hp) * rng.uniform(0.25, 0.75)
        self.cx = w / 2 + rng.uniform(-0.06, 0.06) * w
        self.kps = np.zeros((17, 3), dtype=np.float64)
        self.side = view in ("left", "right")
        # Facing image-right shows the person's left side: COCO's left/right are the person's own.
        self.near = "left" if view == "right" else "right"

    def y(self, t: float) -> float:
        return self.y0 + t * self.hp

    def _kp(self, name: str, x: float, y: float, visible: bool = True) -> None:
        self.kps[KP[name]] = (x, y, 2 if visible else 1)

    def _limb(self, a: tuple[float, float], b: tuple[float, float], colour: RGB, width: float) -> None:
        self.draw.line([a, b], fill=colour, width=max(1, int(width)))
        r = width / 2
        for x, y in (a, b):
            self.draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)

    def paint(self) -> np.ndarray:
        ident, rng, hp, cx = self.ident, self.rng, self.hp, self.cx
        build = ident.build
        sw = (0.07 if self.side else 0.125) * hp * build  # shoulder half-width
        hw = (0.07 if self.side else 0.095) * hp * build  # hip half-width
        ys, yh, yk, ya = self.y(0.19), self.y(0.52), self.y(0.73), self.y(0.94)
        stride = rng.uniform(0.0, 0.06) * hp * (1.6 if self.side else 0.6)
        swing = rng.uniform(-0.05, 0.05) * hp * (1.5 if self.side else 0.5)
        direction = 1.0 if self.view == "right" else -1.0
        # Person's left is image-right when seen from the front, image-left from the back.
        sign = {"left": 1.0, "right": -1.0} if self.view != "back" else {"left": -1.0, "right": 1.0}
        if self.side:
            sign = {"left": 0.35, "right": -0.35} if self.near == "left" else {"left": -0.35, "right": 0.35}

        joints: dict[str, tuple[float, float]] = {}
        for lr in ("left", "right"):
            s = sign[lr]
            leg_sw = stride * (1 if lr == "left" else -1) * (direction if self.side else 1)
            joints[f"{lr}_shoulder"] = (cx + s * sw, ys + 0.01 * hp)
            joints[f"{lr}_hip"] = (cx + s * hw * 0.6, yh)
            joints[f"{lr}_knee"] = (cx + s * hw * 0.6 + leg_sw * 0.6, yk)
            joints[f"{lr}_ankle"] = (cx + s * hw * 0.6 + leg_sw, ya)
            arm_sw = -leg_sw * 0.8 + swing
            out = 0.0 if self.side else s * 0.025 * hp
            joints[f"{lr}_elbow"] = (cx + s * sw + out + arm_sw * 0.5, self.y(0.36))
            joints[f"{lr}_wrist"] = (cx + s * sw + out * 1.4 + arm_sw, self.y(0.5))

        far = {"left": "right", "right": "left"}[self.near] if self.side else None
        order = [far, self.near] if self.side else ["left", "right"]
        leg_w, arm_w = 0.065 * hp * build, 0.05 * hp * build
        skin, bottom = ident.skin, ident.bottom

        if ident.accessory == "backpack" and self.side:
            self._backpack(sw, ys, direction)  # seen from the side, it sticks out behind the body
        # Legs, far side first.
        for lr in order:
            if lr is None:
                continue
            hip, knee, ankle = joints[f"{lr}_hip"], joints[f"{lr}_knee"], joints[f"{lr}_ankle"]
            if ident.bottom_style == "trousers":
                self._limb(hip, knee, bottom, leg_w)
                self._limb(knee, ankle, bottom, leg_w * 0.9)
            else:
                self._limb(hip, knee, skin, leg_w * 0.8)
                self._limb(knee, ankle, skin, leg_w * 0.75)
                if ident.bottom_style == "shorts":
                    mid = (hip[0] * 0.4 + knee[0] * 0.6, hip[1] * 0.4 + knee[1] * 0.6)
                    self._limb(hip, mid, bottom, leg_w * 1.05)
            foot_dx = direction * 0.04 * hp if self.side else 0.0
            fx, fy = ankle
            self.draw.ellipse(
                [fx - leg_w * 0.55 + foot_dx, fy - 0.01 * hp, fx + leg_w * 0.55 + foot_dx, fy + 0.045 * hp],
                fill=ident.shoes,
            )
        if ident.bottom_style == "skirt":
            self.draw.polygon(
                [
                    (cx - hw * 1.05, yh - 0.03 * hp),
                    (cx + hw * 1.05, yh - 0.03 * hp),
                    (cx + hw * 1.6, self.y(0.7)),
                    (cx - hw * 1.6, self.y(0.7)),
                ],
                fill=bottom,
            )
        # Far arm behind the torso.
        if self.side and far:
            self._arm(joints, far, arm_w)
        self._torso(sw, hw, ys, yh)
        if ident.accessory == "backpack":
            if self.view == "front":
                for s in (-1, 1):
                    self._limb(
                        (cx + s * sw * 0.55, ys), (cx + s * sw * 0.5, self.y(0.4)), ident.accessory_colour, 0.02 * hp
                    )
            elif self.view == "back":
                self._backpack(sw, ys, direction)
        for lr in [self.near] if self.side else ["left", "right"]:
            self._arm(joints, lr, arm_w)
        if ident.accessory == "bag":
            self._bag(sw, ys, yh)
        self._head(direction)

        for name, (x, y) in joints.items():
            side = name.split("_")[0]
            self._kp(name, x, y, visible=not (self.side and side == far))
        return self.kps

    def _torso(self, sw: float, hw: float, ys: float, yh: float) -> None:
        ident, cx, hp = self.ident, self.cx, self.hp
        w, h = self.canvas.size
        mask = Image.new("L", (w, h), 0)
        poly = [(cx - sw, ys), (cx + sw, ys), (cx + hw * 1.1, yh + 0.03 * hp), (cx - hw * 1.1, yh + 0.03 * hp)]
        ImageDraw.Draw(mask).polygon(poly, fill=255)
        period = max(2, int(0.035 * hp))
        pattern = ident.top_pattern
        if pattern == "solid":
            fill = Image.new("RGB", (w, h), ident.top)
        elif pattern == "split":
            fill = Image.new("RGB", (w, h), ident.top)
            ImageDraw.Draw(fill).rectangle([0, (ys + yh) / 2, w, h], fill=ident.top2)
        else:
            fill = _stripes(w, h, ident.top, ident.top2, period, pattern == "vstripes", pattern == "checks")
        self.canvas.paste(fill, (0, 0), mask)

    def _arm(self, joints: dict[str, tuple[float, float]], lr: str, width: float) -> None:
        ident = self.ident
        shoulder, elbow, wrist = joints[f"{lr}_shoulder"], joints[f"{lr}_elbow"], joints[f"{lr}_wrist"]
        self._limb(shoulder, elbow, ident.top, width)
        self._limb(elbow, wrist, ident.top if ident.long_sleeves else ident.skin, width * 0.85)
        r = width * 0.55
        self.draw.ellipse([wrist[0] - r, wrist[1] - r, wrist[0] + r, wrist[1] + r * 1.3], fill=ident.skin)

    def _backpack(self, sw: float, ys: float, direction: float) -> None:
        cx, hp, colour = self.cx, self.hp, self.ident.accessory_colour
        if self.side:
            x0 = cx - direction * (sw + 0.07 * hp)
            box = [min(x0, cx), ys + 0.02 * hp, max(x0, cx), self.y(0.45)]
        else:
            box = [cx - sw * 0.75, ys + 0.03 * hp, cx + sw * 0.75, self.y(0.44)]
        self.draw.rounded_rectangle(box, radius=0.02 * hp, fill=colour)

    def _bag(self, sw: float, ys: float, yh: float) -> None:
        cx, hp, colour = self.cx, self.hp, self.ident.accessory_colour
        self._limb((cx - sw * 0.7, ys), (cx + sw * 0.9, self.y(0.47)), colour, 0.015 * hp)
        self.draw.rectangle([cx + sw * 0.6, self.y(0.45), cx + sw * 1.25, self.y(0.57)], fill=colour)

    def _head(self, direction: float) -> None:
        ident, cx, hp = self.ident, self.cx, self.hp
        hy, rx, ry = self.y(0.085), 0.05 * hp, 0.062 * hp
        if ident.long_hair:
            self.draw.rectangle([cx - rx * 1.05, hy, cx + rx * 1.05, self.y(0.2)], fill=ident.hair)
        self.draw.rectangle([cx - 0.02 * hp, hy + ry * 0.6, cx + 0.02 * hp, self.y(0.2)], fill=ident.skin)  # neck
        self.draw.ellipse([cx - rx, hy - ry, cx + rx, hy + ry], fill=ident.skin)
        if self.view == "back":
            self.draw.ellipse([cx - rx * 1.02, hy - ry * 1.05, cx + rx * 1.02, hy + ry * 0.8], fill=ident.hair)
        elif self.side:
            self.draw.chord(
                [
                    cx - rx * 1.02 - direction * rx * 0.3,
                    hy - ry * 1.05,
                    cx + rx * 1.02 - direction * rx * 0.3,
                    hy + ry * 0.9,
                ],
                180,
                360,
                fill=ident.hair,
            )
        else:
            self.draw.chord([cx - rx * 1.02, hy - ry * 1.08, cx + rx * 1.02, hy + ry * 0.5], 180, 360, fill=ident.hair)
        if ident.accessory == "hat":
            self.draw.rectangle(
                [cx - rx * 1.3, hy - ry * 0.75, cx + rx * 1.3, hy - ry * 0.55], fill=ident.accessory_colour
            )
            self.draw.ellipse(
                [cx - rx * 0.95, hy - ry * 1.2, cx + rx * 0.95, hy - ry * 0.4], fill=ident.accessory_colour
            )
        eye_y, ear_y = hy - ry * 0.1, hy
        if self.view == "front":
            self._kp("nose", cx, hy + ry * 0.2)
            self._kp("left_eye", cx + rx * 0.4, eye_y)
            self._kp("right_eye", cx - rx * 0.4, eye_y)
            self._kp("left_ear", cx + rx, ear_y)
            self._kp("right_ear", cx - rx, ear_y)
        elif self.view == "back":
            self._kp("nose", cx, hy + ry * 0.2, visible=False)
            self._kp("left_eye", cx - rx * 0.4, eye_y, visible=False)
            self._kp("right_eye", cx + rx * 0.4, eye_y, visible=False)
            self._kp("left_ear", cx - rx, ear_y)
            self._kp("right_ear", cx + rx, ear_y)
        else:
            far = "right" if self.near == "left" else "left"
            self._kp("nose", cx + direction * rx * 1.05, hy + ry * 0.15)
            self._kp(f"{self.near}_eye", cx + direction * rx * 0.6, eye_y)
            self._kp(f"{far}_eye", cx + direction * rx * 0.75, eye_y, visible=False)
            self._kp(f"{self.near}_ear", cx - direction * rx * 0.1, ear_y)
            self._kp(f"{far}_ear", cx - direction * rx * 0.1, ear_y, visible=False)


def render_person(ident: Identity | None, cam: Camera, width: int, height: int, rng: np.random.Generator) -> Rendered:
    """Draw `ident` (or only the background when None) as camera `cam` sees it, at width x height pixels."""
    sw_, sh_ = width * SUPERSAMPLE, height * SUPERSAMPLE
    bg = _background(cam, sw_, sh_, rng)
    canvas = Image.fromarray(bg.astype(np.uint8), "RGB")
    kps = np.zeros((17, 3), dtype=np.float64)
    if ident is not None:
        view = VIEWS[int(rng.choice(4, p=np.array(cam.view_probs)))]
        kps = _Painter(canvas, ident, view, rng).paint()
    image = canvas.resize((width, height), Image.Resampling.BOX)
    labelled = kps[:, 2] > 0
    kps[labelled, :2] /= SUPERSAMPLE
    # Camera: light and colour cast, sensor noise, then optics blur.
    arr = np.asarray(image, dtype=np.float32) * cam.light * np.array(cam.tint, dtype=np.float32)
    if cam.noise > 0:
        arr += rng.normal(0.0, cam.noise, size=arr.shape)
    image = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    if cam.blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(cam.blur))
    outside = (kps[:, 0] < 0) | (kps[:, 1] < 0) | (kps[:, 0] >= width) | (kps[:, 1] >= height)
    kps[outside] = 0
    return Rendered(image, kps)


def add_occluder(sample: Rendered, rng: np.random.Generator) -> tuple[Rendered, int]:
    """Paste an occluder (a box, a board or a bush) over the lower or a side part; returns the image and its top row.

    Keypoints under the occluder keep their position with visibility 1 (labelled, not visible), as in COCO.
    """
    image = sample.image.copy()
    w, h = image.size
    draw = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(20, 235, size=3))
    kind = int(rng.integers(3))
    top = int(h * rng.uniform(0.45, 0.75))
    if kind == 0:  # a car-like box or a barrier from the bottom
        box = (int(-0.1 * w), top, int(1.1 * w), h)
        draw.rectangle(box, fill=colour)
        draw.rectangle((box[0], top, box[2], top + max(2, h // 40)), fill=tuple(c // 2 for c in colour))
    elif kind == 1:  # a board on one side, reaching the bottom
        left = bool(rng.random() < 0.5)
        edge = int(w * rng.uniform(0.35, 0.6))
        top = int(h * rng.uniform(0.3, 0.55))
        box = (0, top, edge, h) if left else (w - edge, top, w, h)
        draw.rectangle(box, fill=colour)
    else:  # a bush: overlapping blobs
        box = (0, top, w, h)
        for _ in range(6):
            cx, cy = rng.uniform(0, w), rng.uniform(top, h)
            r = w * rng.uniform(0.2, 0.35)
            draw.ellipse((cx - r, max(top, cy - r), cx + r, cy + r), fill=colour)
        draw.rectangle((0, int(top + 0.15 * (h - top)), w, h), fill=colour)
    kps = sample.keypoints.copy()
    inside = (kps[:, 2] > 0) & (kps[:, 0] >= box[0]) & (kps[:, 0] <= box[2]) & (kps[:, 1] >= box[1]) & (kps[:, 1] <= h)
    kps[inside, 2] = 1
    return Rendered(image, kps), top


def crop_partial(sample: Rendered, rng: np.random.Generator) -> Rendered:
    """A partial view: a crop of random vertical extent, mostly from the top (so the visible scale varies)."""
    w, h = sample.image.size
    extent = rng.uniform(0.35, 0.8)
    crop_h = max(8, round(h * extent))
    top = 0 if rng.random() < 0.8 else int(rng.integers(0, h - crop_h + 1))
    margin = int(rng.integers(0, max(1, w // 10)))
    return sample.crop((margin, top, w - margin, top + crop_h))


@dataclass
class _Split:
    """Images of one benchmark folder, written with their keypoints into one COCO file."""

    root: Path
    quality: int
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)

    def write(self, relpath: str, sample: Rendered) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        sample.image.save(path, format="JPEG", quality=self.quality, subsampling=0, optimize=False)
        image_id = len(self.images) + 1
        w, h = sample.image.size
        self.images.append({"id": image_id, "file_name": relpath, "width": w, "height": h})
        kps = sample.keypoints
        labelled = kps[:, 2] > 0
        if labelled.any():
            x0, y0 = kps[labelled, 0].min(), kps[labelled, 1].min()
            bbox = [
                round(float(x0), 2),
                round(float(y0), 2),
                round(float(kps[labelled, 0].max() - x0), 2),
                round(float(kps[labelled, 1].max() - y0), 2),
            ]
        else:
            bbox = [0.0, 0.0, 0.0, 0.0]
        flat: list[float | int] = []
        for x, y, v in kps:
            flat += [round(float(x), 2), round(float(y), 2), int(v)]
        self.annotations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "category_id": 1,
                "iscrowd": 0,
                "keypoints": flat,
                "num_keypoints": int(labelled.sum()),
                "bbox": bbox,
                "area": round(bbox[2] * bbox[3], 2),
            }
        )

    def close(self, seed: int) -> None:
        coco = {
            "info": {
                "description": "sanet-bench synthetic benchmark ground-truth keypoints",
                "generator_version": GENERATOR_VERSION,
                "seed": seed,
            },
            "categories": [
                {
                    "id": 1,
                    "name": "person",
                    "supercategory": "person",
                    "keypoints": list(COCO_KEYPOINTS),
                    "skeleton": [list(e) for e in COCO_SKELETON],
                }
            ],
            "images": self.images,
            "annotations": self.annotations,
        }
        (self.root / KEYPOINTS_FILE).write_text(json.dumps(coco, separators=(",", ":")) + "\n")


class SyntheticBenchmark:
    """Generates the six benchmark layouts for one parameter set (`params.synth`)."""

    def __init__(self, params: SynthParams):
        self.p = params
        self.seed = params.seed
        self.h, self.w = params.image_height, params.image_width
        self._cameras: dict[tuple[int, int], Camera] = {}
        self.counts: dict[str, int] = {}

    def camera(self, bench: str, index: int) -> Camera:
        key = (BENCH_CODES[bench], index)
        if key not in self._cameras:
            self._cameras[key] = Camera.sample(self.seed, *key)
        return self._cameras[key]

    def identity(self, bench: str, pid: int) -> Identity:
        return Identity.sample(self.seed, BENCH_CODES[bench], pid)

    def _image_rng(self, bench: str, pid: int, k: int) -> np.random.Generator:
        return _rng(self.seed, BENCH_CODES[bench], pid + 10_000, k + 1)

    def render(self, bench: str, pid: int, cam: int, k: int, size: tuple[int, int] | None = None) -> Rendered:
        """Image number `k` of identity `pid` in camera `cam` (deterministic)."""
        rng = self._image_rng(bench, pid, k)
        w, h = size or (self.w, self.h)
        return render_person(self.identity(bench, pid), self.camera(bench, cam), w, h, rng)

    # -- Market-1501 and DukeMTMC-reID ------------------------------------------------------------------------

    def _pids(self, bench: str, count: int, high: int) -> list[int]:
        rng = _rng(self.seed, BENCH_CODES[bench], 999_999)
        return [int(p) for p in rng.choice(np.arange(1, high + 1), size=count, replace=False)]

    def _holistic(self, out: Path, bench: str, dirname: str, n_cams: int, name, sizes: bool) -> Iterator[int]:
        """Shared Market/Duke layout: train identities, then test identities split into query and gallery."""
        p = self.p.market if bench == "market" else self.p.duke
        extra = 0 if bench == "market" else p.gallery_only_ids
        pids = self._pids(bench, p.train_ids + p.test_ids + extra, 1501 if bench == "market" else 7140)
        train, test, only = (
            pids[: p.train_ids],
            pids[p.train_ids : p.train_ids + p.test_ids],
            pids[-extra:] if extra else [],
        )
        split = _Split(out / dirname, self.p.jpeg_quality)
        frame = 0

        def emit(folder: str, pid: int, cam: int, k: int, label: int | None = None) -> None:
            nonlocal frame
            frame += 1
            rng = self._image_rng(bench, pid, 5000 + k)
            size = (self.w, int(self.h * rng.uniform(0.85, 1.25))) if sizes else None
            sample = self.render(bench, pid, cam, k, size)
            split.write(f"{folder}/{name(pid if label is None else label, cam, frame, k)}", sample)

        for pid in train:
            rng = _rng(self.seed, BENCH_CODES[bench], pid, 7)
            cams = rng.choice(np.arange(1, n_cams + 1), size=int(rng.integers(2, min(5, n_cams) + 1)), replace=False)
            k = 0
            for cam in sorted(int(c) for c in cams):
                for _ in range(int(rng.integers(1, 4))):
                    emit("bounding_box_train", pid, cam, k)
                    k += 1
            yield 1
        for pid in test:
            rng = _rng(self.seed, BENCH_CODES[bench], pid, 7)
            # Four cameras in random order: the first two also hold this identity's queries.
            cams = [int(c) for c in rng.choice(np.arange(1, n_cams + 1), size=4, replace=False)]
            k = 0
            for cam in cams[:2]:
                emit("query", pid, cam, k)
                k += 1
            for cam in cams:
                for _ in range(1 if cam in cams[:2] else int(rng.integers(1, 3))):
                    emit("bounding_box_test", pid, cam, k)
                    k += 1
            yield 1
        for pid in only:
            rng = _rng(self.seed, BENCH_CODES[bench], pid, 7)
            cam = int(rng.integers(1, n_cams + 1))
            for k in range(2):
                emit("bounding_box_test", pid, cam, k)
            yield 1
        if bench == "market":
            # pid 0: distractors (bad detections that stay in the gallery); pid -1: junk (dropped by the protocol).
            for label, count in ((0, p.distractors), (-1, p.junk)):
                for i in range(count):
                    rng = _rng(self.seed, BENCH_CODES[bench], 200_000 + label, i)
                    cam = int(rng.integers(1, n_cams + 1))
                    other = pids[int(rng.integers(len(pids)))]
                    person = None if label == -1 and rng.random() < 0.5 else self.identity(bench, other)
                    full = render_person(person, self.camera(bench, cam), self.w, self.h, rng)
                    if label == 0:
                        # A misaligned box: only part of a person, shifted.
                        shift = int(rng.uniform(0.25, 0.5) * self.h) * (1 if rng.random() < 0.5 else -1)
                        img = Image.new("RGB", full.image.size, self.camera(bench, cam).ground)
                        img.paste(full.image, (0, shift))
                        kps = full.keypoints.copy()
                        kps[:, 1] += shift
                        kps[(kps[:, 1] < 0) | (kps[:, 1] >= self.h) | (kps[:, 2] == 0)] = 0
                        full = Rendered(img, kps)
                    frame += 1
                    split.write(f"bounding_box_test/{name(label, cam, frame, i)}", full)
                yield 1
        split.close(self.seed)
        self.counts[dirname] = len(split.images)

    def market(self, out: Path) -> Iterator[int]:
        def name(pid: int, cam: int, frame: int, k: int) -> str:
            pid_text = "-1" if pid == -1 else f"{pid:04d}"
            return f"{pid_text}_c{cam}s{(frame % 6) + 1}_{frame * 25:06d}_{(k % 9) + 1:02d}.jpg"

        return self._holistic(out, "market", MARKET_DIR, 6, name, sizes=False)

    def duke(self, out: Path) -> Iterator[int]:
        def name(pid: int, cam: int, frame: int, k: int) -> str:
            return f"{pid:04d}_c{cam}_f{frame * 37:07d}.jpg"

        return self._holistic(out, "duke", DUKE_DIR, 8, name, sizes=True)

    # -- Partial-REID -----------------------------------------------------------------------------------------

    def partial_reid(self, out: Path) -> Iterator[int]:
        """Whole, partial (vertical crops) and occluded images; both Partial-REID protocols read these files."""
        p = self.p.partial
        split = _Split(out / PARTIAL_REID_DIR, self.p.jpeg_quality)
        for pid in range(1, p.partial_reid_ids + 1):
            for k in range(p.partial_reid_images):
                num = f"{pid:03d}_{k + 1:02d}.jpg"
                split.write(f"whole_body_images/{num}", self.render("partial_reid", pid, 1 + k % 2, k))
                rng = self._image_rng("partial_reid", pid, 100 + k)
                split.write(
                    f"partial_body_images/{num}", crop_partial(self.render("partial_reid", pid, 3, 100 + k), rng)
                )
                occluded, _ = add_occluder(self.render("partial_reid", pid, 4, 200 + k), rng)
                split.write(f"occluded_body_images/{num}", occluded)
            yield 1
        split.close(self.seed)
        self.counts[PARTIAL_REID_DIR] = len(split.images)

    # -- Partial-iLIDS, both releases -------------------------------------------------------------------------

    def partial_ilids(self, out: Path) -> Iterator[int]:
        """The FPR release (-O) keeps the occluder in the probe; the DSR release (-P) crops it away."""
        p = self.p.partial
        dsr = _Split(out / ILIDS_P_DIR, self.p.jpeg_quality)
        fpr = _Split(out / ILIDS_O_DIR, self.p.jpeg_quality)
        for pid in range(1, p.partial_ilids_ids + 1):
            gallery = self.render("partial_ilids", pid, 1, 0)
            rng = self._image_rng("partial_ilids", pid, 50)
            occluded, top = add_occluder(self.render("partial_ilids", pid, 2, 1), rng)
            cropped = occluded.crop((0, 0, self.w, max(8, top)))
            dsr.write(f"Probe/{pid:03d}.jpg", cropped)
            dsr.write(f"Gallery/{pid:03d}.jpg", gallery)
            fpr.write(f"Probe/{pid:04d}.jpg", occluded)
            fpr.write(f"Gallery/{pid:04d}.jpg", gallery)
            yield 1
        for split, dirname in ((dsr, ILIDS_P_DIR), (fpr, ILIDS_O_DIR)):
            split.close(self.seed)
            self.counts[dirname] = len(split.images)

    def total_steps(self) -> int:
        m, d, pp = self.p.market, self.p.duke, self.p.partial
        return (
            m.train_ids
            + m.test_ids
            + 2
            + d.train_ids
            + d.test_ids
            + d.gallery_only_ids
            + pp.partial_reid_ids
            + pp.partial_ilids_ids
        )

    def generate(self, out: Path, progress: bool = True) -> dict[str, int]:
        """Write every layout under `out` (which must be empty or absent); returns image counts per folder."""
        steps = (self.market(out), self.duke(out), self.partial_reid(out), self.partial_ilids(out))
        with tqdm(total=self.total_steps(), desc="synthesising identities", unit="id", disable=not progress) as bar:
            for gen in steps:
                for n in gen:
                    bar.update(n)
        marker = {
            "generator": "sanet.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "params": self.p.model_dump(),
            "images": dict(sorted(self.counts.items())),
        }
        (out / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        return dict(self.counts)


def write_synthetic(out: str | Path, params: SynthParams, progress: bool = True) -> dict[str, int]:
    """Generate the synthetic benchmark into `out`, replacing an earlier synthetic benchmark there atomically.

    The benchmark is built in a temporary sibling folder and moved into place only when complete, so an interrupted
    run leaves the previous data untouched. Files in `out` that do not belong to a benchmark layout are kept; a
    benchmark folder in `out` that the generator did not write (real data) stops the run instead of being replaced.
    """
    out = Path(out)
    existing = [d for d in DATASET_DIRS if (out / d).exists()]
    if existing and not (out / MARKER_FILE).is_file():
        raise OverwriteError(
            f"{out} already holds {', '.join(existing)} and no {MARKER_FILE} marker: it looks like real data. "
            "Choose another --out folder (or move the real data away first)."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    try:
        counts = SyntheticBenchmark(params).generate(tmp, progress=progress)
        out.mkdir(exist_ok=True)
        for name in (*DATASET_DIRS, MARKER_FILE):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


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

    pids = gen._pids("market", identities, 1501)
    for row, pid in enumerate(pids):
        for cam in range(1, 7):
            put(row, cam - 1, gen.render("market", pid, cam, cam))
        rng = gen._image_rng("partial_reid", row + 1, 100)
        put(row, 6, gen.render("partial_reid", row + 1, 1, 0), keypoints=True)
        put(row, 7, crop_partial(gen.render("partial_reid", row + 1, 3, 100), rng), keypoints=True)
        put(row, 8, add_occluder(gen.render("partial_reid", row + 1, 4, 200), rng)[0], keypoints=True)
        put(row, 9, gen.render("partial_ilids", row + 1, 1, 0))
        rng = gen._image_rng("partial_ilids", row + 1, 50)
        occluded, top = add_occluder(gen.render("partial_ilids", row + 1, 2, 1), rng)
        put(row, 10, occluded)
        put(row, 11, occluded.crop((0, 0, gen.w, max(8, top))))
    return sheet


def write_contact_sheet(path: str | Path, params: SynthParams) -> Path:
    """Save `contact_sheet` as a PNG, atomically."""
    sheet = contact_sheet(params)
    return atomic_write(path, lambda handle: sheet.save(handle, format="PNG"))
