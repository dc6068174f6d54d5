"""The synthetic pedestrians: identities, cameras, the painter that draws a person with its keypoints, occluders and
partial crops.

Every draw comes from its own seed sequence (`rng_for`), so the order of generation never changes an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sanet.contracts.keypoints import KP

SUPERSAMPLE = 2

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


def rng_for(seed: int, *keys: int) -> np.random.Generator:
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
        rng = rng_for(seed, bench, pid, 0)
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
        rng = rng_for(seed, bench, 100_000 + index)
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
        lr: str | None  # a side; None in the legs' draw order for a side view's hidden far side
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
