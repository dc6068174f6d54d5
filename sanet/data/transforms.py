"""Image decoding and the transforms that turn a stored image and its part masks into network inputs and labels.

Training augments the image and its five part masks together (paper section 4.2: flipping, random cropping, colour),
so that the segmentation heads learn masks that sit where the person's parts are in the augmented image:

0. a partial view (``augment.partial.crop``, :mod:`sanet.data.partial`): a random vertical extent of the stored
   image and the same extent of its masks, which step 1 stretches to the input, as every benchmark protocol stretches
   a partial probe; the parts outside the extent leave the labels;
1. resize the image to the network input (bilinear, antialiased) and the masks to the same size (nearest). The
   stored masks are a grid over the whole original image whatever its aspect ratio, so both fill the input exactly;
2. horizontal flip (both);
3. zero padding on every side and a random crop back to the input size at the same offset (both);
4. colour jitter (image only: colours do not move body parts);
4b. part occlusion (``augment.partial.occlude``): the rows below a random row painted one random colour, an occluder
   from the ground up as in Partial-REID's occluded images, and cleared from every mask;
5. random erasing (Zhong et al.): a rectangle of random pixels; it is also cleared from every mask, because those
   pixels no longer show the person;
5b. after a partial view, an occlusion or an erasing, with ``augment.partial.labels: keypoints`` and the person's
   stored keypoints (:class:`PersonKeypoints`): the parts that the mask stage would not label visible in this view
   leave the labels entirely. The keypoints follow steps 0-3; the ones outside the view, or under the occluder or the
   erased box, are missing; the stage's own rule (:class:`sanet.masks.part_masks.LabelRule`) then decides. So the
   thigh tops above an occluder that hides the knees are no lower body, exactly as the stage labels an occluded
   probe (a knee behind an occluder is missing, while one the crop cut off is extrapolated);
6. ImageNet normalisation of the image, and area averaging of the masks over ``label_stride`` x ``label_stride``
   blocks into soft labels in [0, 1].

Every random choice is drawn from the ``torch.Generator`` passed in, never from a global generator, so that a given
seed gives the same sample in the main process, in any DataLoader worker and in a resumed run. The draws are kept
in a :class:`TrainSample` (:meth:`TrainTransform.sample`) that :meth:`TrainTransform.apply` replays, so tests and
previews can see and set exactly what was done.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.io import ImageReadMode, read_file
from torchvision.io import decode_image as _decode
from torchvision.transforms import InterpolationMode

from sanet.config import AugmentParams
from sanet.contracts.parts import NUM_PARTS
from sanet.data.benchmarks import CorruptImageError
from sanet.data.partial import RowSpan, crop_rows, occlude_rows, sample_extent
from sanet.masks.part_masks import LabelRule

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ColorFactors",
    "EraseBox",
    "Occlusion",
    "PersonKeypoints",
    "TestTransform",
    "TrainSample",
    "TrainTransform",
    "decode_image",
    "normalize",
    "resize_image",
    "resize_masks",
]

#: Per-channel RGB mean and standard deviation of ImageNet, which the pretrained backbone expects.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Tries at drawing an erasing rectangle that fits the image before giving up (Zhong et al. use up to 100).
ERASE_ATTEMPTS = 10

# torchvision's C++ errors start with "function, /path/to/file.cpp:123, "; the reason is what follows.
_CPP_PREFIX = re.compile(r"^[^,\n]*, [^,\n]*\.(?:cpp|cc|h|cu):\d+, ")
_DEPRECATED = "The image decoding and encoding capabilities of TorchVision are deprecated"


def decode_image(path: str | Path) -> Tensor:
    """Read and fully decode an image file into a uint8 (3, h, w) RGB tensor.

    Uses torchvision's decoders (several times faster than PIL for JPEG, which matters in training workers). A
    missing, truncated or non-image file raises :class:`CorruptImageError` naming the path and the reason, in the
    same words as :func:`sanet.data.benchmarks.read_image`, so a bad file among thousands can be found and replaced.
    """

    def corrupt(reason: str) -> CorruptImageError:
        return CorruptImageError(f"cannot read the image\n  {path}\nreason: {reason}")

    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not a dependency; the pinned
            # torchvision keeps them. Revisit (TorchCodec or PIL) when torchvision is upgraded past them.
            warnings.filterwarnings("ignore", message=_DEPRECATED, category=DeprecationWarning)
            image = _decode(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as exc:
        reason = _CPP_PREFIX.sub("", str(exc).strip()) or type(exc).__name__
        raise corrupt(reason) from exc
    if image.ndim != 3 or image.shape[0] != 3:
        raise corrupt(f"decoded to shape {tuple(image.shape)}, not a single RGB image")
    if image.dtype != torch.uint8:  # e.g. a 16-bit PNG
        image = TF.to_dtype(image, torch.uint8, scale=True)
    return image


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 (3, h, w) -> uint8 (3, H, W), bilinear with antialiasing (shared by training and test)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(P, mh, mw) {0, 1} masks -> uint8 (P, H, W) by nearest neighbour.

    The stored masks are a grid over the image: mask cell (i, j) covers the image rows [i h / mh, (i + 1) h / mh)
    and likewise for columns. Sampling each output pixel at its centre ("nearest-exact") keeps that correspondence;
    the legacy "nearest" mode would shift the masks by half an output pixel.
    """
    masks = masks.to(torch.uint8)
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks[None], size=size, mode="nearest-exact")[0]


def normalize(image: Tensor) -> Tensor:
    """uint8 (3, H, W) -> float32 (3, H, W) scaled to [0, 1] and normalised with the ImageNet mean and std."""
    return TF.normalize(TF.to_dtype(image, torch.float32, scale=True), list(IMAGENET_MEAN), list(IMAGENET_STD))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) with positive values, got {size}")
    return int(size[0]), int(size[1])


def _check_image(image: Tensor) -> None:
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, h, w) image, got {image.dtype} {tuple(image.shape)}")


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColorFactors:
    """Colour jitter of one image: multiplicative brightness, contrast and saturation factors and a hue shift."""

    brightness: float
    contrast: float
    saturation: float
    hue: float


@dataclass(frozen=True)
class EraseBox:
    """The erased rectangle in output pixels, and the seed of its random fill."""

    top: int
    left: int
    height: int
    width: int
    fill_seed: int


@dataclass(frozen=True)
class Occlusion:
    """Rows painted over (in output pixels) and their colour."""

    span: RowSpan
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class PersonKeypoints:
    """The person's stored keypoints (17, 3: x, y, confidence in the stored image's pixels) and the mask stage's
    rule that drew the masks from them: what relabels a partial view (step 5b)."""

    keypoints: np.ndarray
    rule: LabelRule


@dataclass(frozen=True)
class TrainSample:
    """Every random choice of one training transform.

    ``top`` and ``left`` are the crop offset inside the zero-padded image, in [0, 2 * pad]; (pad, pad) leaves the
    image where it was, and a smaller offset moves the content down / right. ``crop`` is the partial view's rows of
    the stored image (``rows`` of :meth:`TrainTransform.sample`). ``crop``, ``color``, ``occlusion`` and ``erase`` are
    None when the step is not applied.
    """

    flip: bool
    top: int
    left: int
    color: ColorFactors | None = None
    erase: EraseBox | None = None
    crop: RowSpan | None = None
    occlusion: Occlusion | None = None


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] (both inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


class TrainTransform:
    """Joint augmentation of a training image and its part masks (module docstring for the steps).

    ``transform(image, masks, generator) -> (image, labels)`` with image uint8 (3, h, w), masks (5, mh, mw) in
    {0, 1} at any resolution covering the whole image, and a seeded ``torch.Generator``; returns the normalised
    float32 (3, H, W) image and float32 (5, H / label_stride, W / label_stride) soft mask labels.
    """

    def __init__(self, size: tuple[int, int], augment: AugmentParams, label_stride: int = 4) -> None:
        self.size = _check_size(size)
        if label_stride < 1 or self.size[0] % label_stride or self.size[1] % label_stride:
            raise ValueError(f"label_stride {label_stride} must be positive and divide the input size {self.size}")
        self.augment = augment
        self.label_stride = label_stride

    @property
    def label_size(self) -> tuple[int, int]:
        """(h, w) of the mask labels."""
        return self.size[0] // self.label_stride, self.size[1] // self.label_stride

    def __call__(
        self, image: Tensor, masks: Tensor, generator: torch.Generator, person: PersonKeypoints | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.apply(image, masks, self.sample(generator, rows=image.shape[-2]), person)

    def sample(self, generator: torch.Generator, rows: int | None = None) -> TrainSample:
        """Draw the random choices of one transform from ``generator`` (and nothing else); ``rows`` is the stored
        image's height (the input height if None), in which the partial view's extent is drawn."""
        aug = self.augment
        partial = aug.partial
        crop = None
        if partial.crop and torch.rand((), generator=generator).item() < partial.crop:
            crop = sample_extent(
                generator, rows or self.size[0], partial.min_extent, partial.max_extent, partial.from_top
            )
        flip = torch.rand((), generator=generator).item() < aug.flip
        top = _randint(generator, 0, 2 * aug.pad)
        left = _randint(generator, 0, 2 * aug.pad)
        color = None
        jitter = aug.color_jitter
        if torch.rand((), generator=generator).item() < jitter.p:
            color = ColorFactors(
                brightness=_uniform(generator, max(0.0, 1 - jitter.brightness), 1 + jitter.brightness),
                contrast=_uniform(generator, max(0.0, 1 - jitter.contrast), 1 + jitter.contrast),
                saturation=_uniform(generator, max(0.0, 1 - jitter.saturation), 1 + jitter.saturation),
                hue=_uniform(generator, -jitter.hue, jitter.hue),
            )
        occlusion = None
        if partial.occlude and torch.rand((), generator=generator).item() < partial.occlude:
            low, high = partial.occlude_top
            first = round(self.size[0] * _uniform(generator, low, high))
            colour = tuple(int(v) for v in torch.randint(20, 236, (3,), generator=generator).tolist())
            occlusion = Occlusion(RowSpan(first, self.size[0] - first), colour)  # type: ignore[arg-type]
        erase = None
        if torch.rand((), generator=generator).item() < aug.random_erasing.p:
            erase = self._sample_erase(generator)
        return TrainSample(flip=flip, top=top, left=left, color=color, erase=erase, crop=crop, occlusion=occlusion)

    def _sample_erase(self, generator: torch.Generator) -> EraseBox | None:
        """A rectangle of random area fraction and log-uniform aspect ratio that fits the image (Zhong et al.)."""
        params = self.augment.random_erasing
        height, width = self.size
        log_aspect = math.log(params.min_aspect)
        for _ in range(ERASE_ATTEMPTS):
            area = _uniform(generator, params.min_area, params.max_area) * height * width
            aspect = math.exp(_uniform(generator, log_aspect, -log_aspect))
            h = round(math.sqrt(area * aspect))
            w = round(math.sqrt(area / aspect))
            if 0 < h < height and 0 < w < width:
                top = _randint(generator, 0, height - h)
                left = _randint(generator, 0, width - w)
                fill_seed = int(torch.randint(0, 2**62, (), generator=generator).item())
                return EraseBox(top=top, left=left, height=h, width=w, fill_seed=fill_seed)
        return None

    def augment_uint8(
        self, image: Tensor, masks: Tensor, sample: TrainSample, person: PersonKeypoints | None = None
    ) -> tuple[Tensor, Tensor]:
        """Steps 0-5b at full resolution: uint8 (3, H, W) image and uint8 (5, H, W) {0, 1} masks."""
        _check_image(image)
        if masks.ndim != 3 or masks.shape[0] != NUM_PARTS:
            raise ValueError(f"expected ({NUM_PARTS}, mh, mw) masks, got {tuple(masks.shape)}")
        stored_size = (image.shape[-2], image.shape[-1])
        if sample.crop is not None:
            image, masks = self._crop(image, masks, sample.crop)
        image = resize_image(image, self.size)
        masks = resize_masks(masks, self.size)
        if sample.flip:
            image, masks = image.flip(-1), masks.flip(-1)
        pad = self.augment.pad
        if pad:
            height, width = self.size
            rows = slice(sample.top, sample.top + height)
            cols = slice(sample.left, sample.left + width)
            image = F.pad(image, (pad, pad, pad, pad))[:, rows, cols]
            masks = F.pad(masks, (pad, pad, pad, pad))[:, rows, cols]
        if sample.color is not None:
            image = self._jitter(image, sample.color)
        if sample.occlusion is not None:
            image, masks = occlude_rows(image, masks, sample.occlusion.span, sample.occlusion.colour)
        if sample.erase is not None:
            image, masks = image.clone(), masks.clone()
            box = sample.erase
            rows = slice(box.top, box.top + box.height)
            cols = slice(box.left, box.left + box.width)
            fill = torch.Generator().manual_seed(box.fill_seed)
            image[:, rows, cols] = torch.randint(0, 256, (3, box.height, box.width), generator=fill, dtype=torch.uint8)
            masks[:, rows, cols] = 0
        partial_view = sample.crop is not None or sample.occlusion is not None or sample.erase is not None
        if person is not None and partial_view and self.augment.partial.labels == "keypoints":
            points = self.view_keypoints(person.keypoints, sample, stored_size)
            shown = person.rule.visible(points, (self.size[1], self.size[0]))
            masks = masks * torch.from_numpy(shown).to(masks.dtype).view(NUM_PARTS, 1, 1)
        return image.contiguous(), masks.contiguous()

    def view_keypoints(self, keypoints: np.ndarray, sample: TrainSample, stored_size: tuple[int, int]) -> np.ndarray:
        """The (17, 3) keypoints of a stored image of (height, width) ``stored_size`` moved as steps 0-3 move its
        pixels, in output pixels; the ones outside the output, under the occluder or in the erased box get
        confidence 0 (missing), as the synthetic benchmark and a keypoint detector would leave them."""
        points = np.array(keypoints, dtype=np.float64, copy=True)
        if points.shape != (17, 3):
            raise ValueError(f"expected (17, 3) keypoints (x, y, confidence), got shape {points.shape}")
        x, y, confidence = points[:, 0], points[:, 1], points[:, 2]
        rows, cols = stored_size
        if sample.crop is not None:
            confidence[(y < sample.crop.top) | (y >= sample.crop.bottom)] = 0
            y -= sample.crop.top
            rows = sample.crop.height
        height, width = self.size
        x *= width / cols
        y *= height / rows
        if sample.flip:
            x[:] = width - x
        pad = self.augment.pad
        x += pad - sample.left
        y += pad - sample.top
        confidence[(x < 0) | (x >= width) | (y < 0) | (y >= height)] = 0
        if sample.occlusion is not None:
            confidence[(y >= sample.occlusion.span.top) & (y < sample.occlusion.span.bottom)] = 0
        if sample.erase is not None:
            box = sample.erase
            inside = (y >= box.top) & (y < box.top + box.height) & (x >= box.left) & (x < box.left + box.width)
            confidence[inside] = 0
        return points

    @staticmethod
    def _crop(image: Tensor, masks: Tensor, span: RowSpan) -> tuple[Tensor, Tensor]:
        """Rows ``span`` of the stored image, and the same fraction of the height of its masks (stored at their own
        resolution, a grid over the whole image): mask rows are the nearest to the image's cut lines."""
        rows, mask_rows = image.shape[-2], masks.shape[-2]
        if span.bottom > rows:
            raise ValueError(f"partial view rows {span.top}..{span.bottom} outside an image of {rows} rows")
        image, _ = crop_rows(image, span)
        top = min(mask_rows - 1, round(span.top * mask_rows / rows))
        bottom = max(top + 1, round(span.bottom * mask_rows / rows))
        return image, masks[:, top:bottom]

    @staticmethod
    def _jitter(image: Tensor, color: ColorFactors) -> Tensor:
        if color.brightness != 1:
            image = TF.adjust_brightness(image, color.brightness)
        if color.contrast != 1:
            image = TF.adjust_contrast(image, color.contrast)
        if color.saturation != 1:
            image = TF.adjust_saturation(image, color.saturation)
        if color.hue != 0:
            image = TF.adjust_hue(image, color.hue)
        return image

    def apply(
        self, image: Tensor, masks: Tensor, sample: TrainSample, person: PersonKeypoints | None = None
    ) -> tuple[Tensor, Tensor]:
        """Replay ``sample`` on an image and its masks (and its keypoints, for step 5b): (normalised float32 image,
        float32 soft mask labels)."""
        image, masks = self.augment_uint8(image, masks, sample, person)
        labels = F.avg_pool2d(masks.float(), self.label_stride) if self.label_stride > 1 else masks.float()
        return normalize(image), labels


# --------------------------------------------------------------------------------------------------------------------
# Test
# --------------------------------------------------------------------------------------------------------------------


class TestTransform:
    """Test-time input: resize to the network input and normalise; deterministic (no augmentation)."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = _check_size(size)

    def __call__(self, image: Tensor) -> Tensor:
        _check_image(image)
        return normalize(resize_image(image, self.size))
