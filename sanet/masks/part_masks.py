"""COCO-17 keypoints of one person -> five binary part masks (head, upper body, lower body, feet, whole body).

The geometry, in one place so that it can be reviewed against the paper's intent (SANet section 3.2: masks that say
which body parts an image shows, from OpenPifPaf keypoints):

* **Groups** (DESIGN section 4): head = nose, eyes, ears; upper body = shoulders, elbows, wrists, hips; lower body =
  hips, knees; feet = ankles. The hips are shared: they give the torso its lower corners and the thighs their upper
  ends, but hips alone make neither part visible. A part is drawn only from keypoints of its own group, plus, for the
  lower body, the shins down to the ankles (the leg between knee and foot has no other home).
* **Known keypoints**: a keypoint counts when its confidence is at least `min_confidence`. A keypoint that is not
  known but whose expected position (below or above its partner, one body length away) lies *outside the image* is
  treated as cut off by the crop and extrapolated there, so a partial image cut at the chest still gets its upper
  body down to the crop edge. If the expected position lies *inside* the image, the keypoint is occluded and stays
  missing: nothing is painted over an occluder. Pedestrian crops are upright, so "below" is the image's +y.
* **Scale**: one length `T`, the torso (shoulder midpoint to hip midpoint), estimated as the largest of the body
  lengths the known keypoints give, each divided by its typical ratio to the torso (shoulder width 0.8, hip width
  0.5, thigh 0.9, shin 0.85, upper arm 0.6, ear to ear 0.3). Projection only shortens lengths, so the largest
  estimate is the least foreshortened one. With no pair of keypoints, `T` is 0.6 x the image width (a pedestrian
  box is about one shoulder width and a margin wide).
* **Shapes**, in units of `T`: head = convex hull of the head keypoints grown by 0.25 (covers the skull above the
  eyes); upper body = hull of shoulders and hips grown by 0.18, arms as 0.1-radius capsules shoulder-elbow-wrist
  (a lone elbow or wrist: a 0.1 disc); lower body = hull of hips and knees grown by 0.15, thighs 0.15 capsules, shins
  0.11 capsules to the ankles; feet = ellipses with half-axes 0.16 across and 0.12 down, centred 0.06 below each
  ankle; whole body = union of the four parts and the neck (a 0.1 capsule from the head's centre to the shoulders'
  midpoint).
* **Sampling**: shapes are evaluated in the image's own pixel coordinates at the centres of a 2 x 2 supersampled
  grid of the stored mask, then area-averaged and thresholded at 0.5. Shapes are round in the image even when the
  stored mask has another aspect ratio, and everything outside the image is clipped.
* **Visibility**: a part is visible when its mask covers at least `min_area` of the image; a smaller sliver (a
  confidence blip at a crop border) is cleared, so an empty mask always means "not visible".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from sanet.contracts.keypoints import COCO_KEYPOINTS
from sanet.contracts.parts import NUM_PARTS, PARTS

__all__ = [
    "PART_GROUPS",
    "SUPERSAMPLE",
    "LabelRule",
    "keypoint_scale",
    "part_masks",
    "visibility",
]

_K = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
HEAD = tuple(_K[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"))
SHOULDERS = (_K["left_shoulder"], _K["right_shoulder"])
ELBOWS = (_K["left_elbow"], _K["right_elbow"])
WRISTS = (_K["left_wrist"], _K["right_wrist"])
HIPS = (_K["left_hip"], _K["right_hip"])
KNEES = (_K["left_knee"], _K["right_knee"])
ANKLES = (_K["left_ankle"], _K["right_ankle"])

#: COCO-17 keypoint indices of each local part (DESIGN section 4); "global" is the union of the others.
PART_GROUPS: dict[str, tuple[int, ...]] = {
    "head": HEAD,
    "upper_body": SHOULDERS + ELBOWS + WRISTS + HIPS,
    "lower_body": HIPS + KNEES,
    "feet": ANKLES,
}

#: Samples per stored mask pixel along each axis (2 x 2 = 4 samples, area-averaged, thresholded at 0.5).
SUPERSAMPLE = 2

# Typical lengths in torso lengths (shoulder midpoint to hip midpoint), used to estimate the person's scale.
_RATIOS: tuple[tuple[int, int, float], ...] = (
    (SHOULDERS[0], SHOULDERS[1], 0.8),
    (HIPS[0], HIPS[1], 0.5),
    (HIPS[0], KNEES[0], 0.9),
    (HIPS[1], KNEES[1], 0.9),
    (KNEES[0], ANKLES[0], 0.85),
    (KNEES[1], ANKLES[1], 0.85),
    (SHOULDERS[0], ELBOWS[0], 0.6),
    (SHOULDERS[1], ELBOWS[1], 0.6),
    (_K["left_ear"], _K["right_ear"], 0.3),
)
# Expected offsets between vertically paired keypoints, in torso lengths: shoulder -> hip, hip -> knee, knee -> ankle.
_HIP_BELOW_SHOULDER, _KNEE_BELOW_HIP, _ANKLE_BELOW_KNEE = 1.0, 0.9, 0.85
# Shape sizes in torso lengths (see the module docstring).
_HEAD_R, _TORSO_R, _ARM_R, _PELVIS_R, _THIGH_R, _SHIN_R, _NECK_R = 0.25, 0.18, 0.1, 0.15, 0.15, 0.11, 0.1
_FOOT_RX, _FOOT_RY, _FOOT_DY = 0.16, 0.12, 0.06

Point = np.ndarray  # (2,) float: x, y in image pixels


def keypoint_scale(points: dict[int, Point], image_width: float) -> float:
    """The person's torso length in pixels: the largest length-based estimate (see the module docstring)."""
    estimates: list[float] = []
    top = [points[i] for i in SHOULDERS if i in points]
    bottom = [points[i] for i in HIPS if i in points]
    if top and bottom:
        estimates.append(float(np.linalg.norm(np.mean(top, axis=0) - np.mean(bottom, axis=0))))
    for a, b, ratio in _RATIOS:
        if a in points and b in points:
            estimates.append(float(np.linalg.norm(points[a] - points[b])) / ratio)
    best = max(estimates, default=0.0)
    return best if best > 1e-3 else 0.6 * image_width


class _Canvas:
    """Sample points of one stored mask in image pixel coordinates, and boolean shapes evaluated on them."""

    def __init__(self, image_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        width, height = image_size
        out_h, out_w = out_size
        ys = (np.arange(out_h * SUPERSAMPLE) + 0.5) * (height / (out_h * SUPERSAMPLE))
        xs = (np.arange(out_w * SUPERSAMPLE) + 0.5) * (width / (out_w * SUPERSAMPLE))
        self.y, self.x = np.meshgrid(ys, xs, indexing="ij")
        self.out_size = out_size

    def capsule(self, a: Point, b: Point, radius: float) -> np.ndarray:
        """Points within `radius` of the segment a-b (a disc when a == b)."""
        dx, dy = b[0] - a[0], b[1] - a[1]
        px, py = self.x - a[0], self.y - a[1]
        length2 = dx * dx + dy * dy
        t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        ex, ey = px - t * dx, py - t * dy
        return ex * ex + ey * ey <= radius * radius

    def rounded_hull(self, points: Sequence[Point], radius: float) -> np.ndarray:
        """Points inside the convex hull of `points` or within `radius` of it."""
        hull = _convex_hull(np.asarray(points, dtype=np.float64))
        inside = np.zeros(self.x.shape, dtype=bool)
        if len(hull) >= 3:
            inside = np.ones(self.x.shape, dtype=bool)
            for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):  # counter-clockwise: left of every edge
                inside &= (b[0] - a[0]) * (self.y - a[1]) - (b[1] - a[1]) * (self.x - a[0]) >= 0
        for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
            inside |= self.capsule(a, b, radius)
        return inside

    def ellipse(self, centre: Point, rx: float, ry: float) -> np.ndarray:
        return ((self.x - centre[0]) / rx) ** 2 + ((self.y - centre[1]) / ry) ** 2 <= 1.0

    def reduce(self, samples: np.ndarray) -> np.ndarray:
        """Area-average the supersampled shape to the stored size and threshold at one half."""
        out_h, out_w = self.out_size
        blocks = samples.reshape(out_h, SUPERSAMPLE, out_w, SUPERSAMPLE).mean(axis=(1, 3))
        return (blocks >= 0.5).astype(np.uint8)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise convex hull (in image coordinates, y down) by Andrew's monotone chain; keeps 1-2 points."""
    pts = np.unique(points, axis=0)
    if len(pts) <= 2:
        return pts

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    def chain(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2 and cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = chain(pts), chain(pts[::-1])
    hull = np.array(lower[:-1] + upper[:-1])
    return hull if len(hull) >= 2 else pts


def _outside(p: Point, width: float, height: float) -> bool:
    return not (0 <= p[0] < width and 0 <= p[1] < height)


def _complete_pairs(points: dict[int, Point], scale: float, width: float, height: float) -> dict[int, Point]:
    """Add keypoints that the crop cut off: the partner's position shifted one body length, if that is outside."""
    done = dict(points)
    pairs = (
        (SHOULDERS, HIPS, _HIP_BELOW_SHOULDER),
        (HIPS, KNEES, _KNEE_BELOW_HIP),
        (KNEES, ANKLES, _ANKLE_BELOW_KNEE),
    )
    for upper, lower, length in pairs:
        for up, low in zip(upper, lower, strict=True):
            if up in points and low not in done:
                guess = points[up] + np.array([0.0, length * scale])
                if _outside(guess, width, height):
                    done[low] = guess
            if low in points and up not in done:
                guess = points[low] - np.array([0.0, length * scale])
                if _outside(guess, width, height):
                    done[up] = guess
    return done


def part_masks(
    keypoints: np.ndarray | None,
    image_size: tuple[int, int],
    out_size: tuple[int, int],
    min_confidence: float,
    min_area: float = 0.0,
) -> np.ndarray:
    """Five binary masks (head, upper body, lower body, feet, global) for one person, as uint8 {0, 1}.

    Args:
        keypoints: (17, 3) COCO-17 keypoints (x, y, confidence) in the image's pixels, or None (no person): then all
            five masks are empty.
        image_size: (width, height) of the image the keypoints refer to.
        out_size: (height, width) of the stored masks; the masks cover the whole image, resized to this size.
        min_confidence: keypoints with a lower confidence count as missing.
        min_area: a part covering less than this fraction of the image is cleared (counts as not visible).

    Returns:
        (5, height, width) uint8 array in the order of :data:`sanet.contracts.parts.PARTS`.
    """
    out_h, out_w = out_size
    masks = np.zeros((NUM_PARTS, out_h, out_w), dtype=np.uint8)
    if keypoints is None:
        return masks
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.shape != (len(COCO_KEYPOINTS), 3):
        raise ValueError(f"expected (17, 3) COCO-17 keypoints (x, y, confidence), got shape {kps.shape}")
    width, height = image_size
    known = {i: kps[i, :2] for i in range(len(kps)) if kps[i, 2] >= min_confidence and np.isfinite(kps[i, :2]).all()}
    if not known:
        return masks
    scale = keypoint_scale(known, width)
    points = _complete_pairs(known, scale, width, height)
    canvas = _Canvas(image_size, out_size)
    empty = np.zeros(canvas.x.shape, dtype=bool)
    shapes = {name: empty.copy() for name in PARTS}

    head = [known[i] for i in HEAD if i in known]
    if head:
        shapes["head"] |= canvas.rounded_hull(head, _HEAD_R * scale)

    # Upper body: needs a shoulder, an elbow or a wrist of its own (known, or a shoulder the crop cut off).
    if any(i in known for i in ELBOWS + WRISTS) or any(i in points for i in SHOULDERS):
        torso = [points[i] for i in SHOULDERS + HIPS if i in points]
        if any(i in points for i in SHOULDERS):
            shapes["upper_body"] |= canvas.rounded_hull(torso, _TORSO_R * scale)
        for shoulder, elbow, wrist in zip(SHOULDERS, ELBOWS, WRISTS, strict=True):
            chain = [known[i] for i in (shoulder, elbow, wrist) if i in known]
            for a, b in zip(chain, chain[1:] or chain, strict=False):  # one keypoint alone: a disc
                shapes["upper_body"] |= canvas.capsule(a, b, _ARM_R * scale)

    # Lower body: needs a knee (known, or one the crop cut off); shins run on to the ankles.
    knees = [i for i in KNEES if i in points]
    if knees:
        shapes["lower_body"] |= canvas.rounded_hull([points[i] for i in HIPS + KNEES if i in points], _PELVIS_R * scale)
        for hip, knee, ankle in zip(HIPS, KNEES, ANKLES, strict=True):
            if knee in points and hip in points:
                shapes["lower_body"] |= canvas.capsule(points[hip], points[knee], _THIGH_R * scale)
            if knee in points and ankle in points:
                shapes["lower_body"] |= canvas.capsule(points[knee], points[ankle], _SHIN_R * scale)

    for ankle in ANKLES:
        if ankle in known:
            centre = known[ankle] + np.array([0.0, _FOOT_DY * scale])
            shapes["feet"] |= canvas.ellipse(centre, _FOOT_RX * scale, _FOOT_RY * scale)

    shoulders = [points[i] for i in SHOULDERS if i in points]
    if head and shoulders:
        shapes["global"] |= canvas.capsule(np.mean(head, axis=0), np.mean(shoulders, axis=0), _NECK_R * scale)
    for name in PARTS[:-1]:
        shapes["global"] |= shapes[name]

    min_pixels = min_area * out_h * out_w
    for p, name in enumerate(PARTS):
        mask = canvas.reduce(shapes[name])
        if mask.sum() >= max(min_pixels, 1):
            masks[p] = mask
    return masks


def visibility(masks: np.ndarray) -> np.ndarray:
    """(..., 5, H, W) masks -> (..., 5) bool: a part is visible when its mask is not empty."""
    return cast(np.ndarray, masks.reshape(*masks.shape[:-2], -1).any(axis=-1))


@dataclass(frozen=True)
class LabelRule:
    """The settings the mask stage labelled a folder with (its `index.json`), so that a view of one of its images
    (a crop, an occluder) can be labelled exactly as the stage would label that view.

    Attributes:
        min_confidence: keypoints below it are missing.
        min_area: smaller parts are not visible.
        size: (height, width) of the stored masks.
    """

    min_confidence: float
    min_area: float
    size: tuple[int, int]

    def visible(self, keypoints: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """(5,) bool: the parts the stage's masks would show for `keypoints` in an image of (width, height)."""
        return visibility(part_masks(keypoints, image_size, self.size, self.min_confidence, self.min_area))
