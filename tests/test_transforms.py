"""Joint image + part-mask transforms: masks follow every geometric step, colour never moves them, seeds decide all."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sanet.config import AugmentParams, ColorJitterParams, PartialViewParams, RandomErasingParams
from sanet.data.benchmarks import CorruptImageError
from sanet.data.partial import RowSpan
from sanet.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorFactors,
    Occlusion,
    TestTransform,
    TrainSample,
    TrainTransform,
    decode_image,
)

SIZE = (64, 32)  # network input (height, width) in these tests
PAD = 6
GREY, RED = (128, 128, 128), (255, 0, 0)
# A red rectangle on grey, given on a 2 x 2 mask grid: mask cells rows 4..9, cols 2..5 = image rows 8..19, cols 4..11.
CELL_ROWS, CELL_COLS = (4, 10), (2, 6)
ROWS, COLS = (8, 20), (4, 12)
PART = 1  # upper_body


def augment(
    flip: float = 0.0,
    pad: int = 0,
    jitter: float = 0.0,
    erase: float = 0.0,
    hue: float = 0.0,
    crop: float = 0.0,
    occlude: float = 0.0,
) -> AugmentParams:
    return AugmentParams(
        flip=flip,
        pad=pad,
        color_jitter=ColorJitterParams(p=jitter, brightness=0.4, contrast=0.4, saturation=0.4, hue=hue),
        random_erasing=RandomErasingParams(p=erase),
        partial=PartialViewParams(crop=crop, occlude=occlude),
    )


def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A SIZE image with a red rectangle and (5, 32, 16) masks marking it in one part."""
    image = torch.tensor(GREY, dtype=torch.uint8).view(3, 1, 1).repeat(1, *SIZE)
    image[:, ROWS[0] : ROWS[1], COLS[0] : COLS[1]] = torch.tensor(RED, dtype=torch.uint8).view(3, 1, 1)
    masks = torch.zeros(5, SIZE[0] // 2, SIZE[1] // 2, dtype=torch.uint8)
    masks[PART, CELL_ROWS[0] : CELL_ROWS[1], CELL_COLS[0] : CELL_COLS[1]] = 1
    return image, masks


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def red(image: torch.Tensor) -> torch.Tensor:
    pixels = to_uint8(image).int()
    return (pixels[0] > 200) & (pixels[1] < 60) & (pixels[2] < 60)


def box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), half-open, of the True pixels."""
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def expected_box(flip: bool, top: int, left: int) -> tuple[int, int, int, int]:
    """Where the red rectangle must land, by arithmetic: mirror the columns, then shift by the crop offset."""
    cols = (SIZE[1] - COLS[1], SIZE[1] - COLS[0]) if flip else COLS
    dy, dx = PAD - top, PAD - left
    return (
        max(0, ROWS[0] + dy),
        min(SIZE[0], ROWS[1] + dy),
        max(0, cols[0] + dx),
        min(SIZE[1], cols[1] + dx),
    )


# ---- geometry -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("top, left", [(0, 0), (2 * PAD, 2 * PAD), (0, 2 * PAD), (PAD, PAD), (3, 11), (12, 1)])
def test_masks_follow_flips_and_crops_exactly(flip: bool, top: int, left: int) -> None:
    transform = TrainTransform(SIZE, augment(pad=PAD), label_stride=1)
    image, masks = scene()
    out, labels = transform.apply(image, masks, TrainSample(flip=flip, top=top, left=left))
    assert torch.equal(red(out), labels[PART] > 0.5)
    assert box(labels[PART] > 0.5) == expected_box(flip, top, left)
    assert not labels[[0, 2, 3, 4]].any()
    # the padding shows as black in the image and empty in the masks
    if (top, left) == (0, 0):
        assert (to_uint8(out)[:, :PAD, :PAD] == 0).all()


def test_random_samples_move_image_and_masks_together() -> None:
    transform = TrainTransform(SIZE, augment(flip=0.5, pad=PAD), label_stride=1)
    image, masks = scene()
    seen_flips, seen_offsets = set(), set()
    for seed in range(40):
        sample = transform.sample(torch.Generator().manual_seed(seed))
        assert 0 <= sample.top <= 2 * PAD and 0 <= sample.left <= 2 * PAD
        out, labels = transform.apply(image, masks, sample)
        assert box(labels[PART] > 0.5) == expected_box(sample.flip, sample.top, sample.left)
        assert torch.equal(red(out), labels[PART] > 0.5)
        seen_flips.add(sample.flip)
        seen_offsets.add((sample.top, sample.left))
    assert seen_flips == {False, True} and len(seen_offsets) > 20


def test_masks_cover_the_whole_image_whatever_its_aspect_ratio() -> None:
    """Stored masks are a grid over the original image: after resizing, both mark the same place."""
    image = torch.full((3, 90, 40), 128, dtype=torch.uint8)
    image[:, 30:60, 0:20] = torch.tensor(RED, dtype=torch.uint8).view(3, 1, 1)  # rows 1/3..2/3, left half
    masks = torch.zeros(5, 96, 32, dtype=torch.uint8)
    masks[PART, 32:64, 0:16] = 1
    transform = TrainTransform(SIZE, augment(flip=1.0), label_stride=1)
    out, labels = transform(image, masks, torch.Generator().manual_seed(0))
    marked, coloured = labels[PART] > 0.5, red(out)
    iou = (marked & coloured).sum() / (marked | coloured).sum()
    assert iou > 0.9
    assert box(marked) == (21, 43, 16, 32)  # flipped into the right half, rows 64/3..128/3


# ---- outputs --------------------------------------------------------------------------------------------------------


def test_output_shapes_types_and_soft_labels() -> None:
    transform = TrainTransform(SIZE, augment(flip=0.5, pad=PAD, jitter=1.0, erase=1.0))
    image = torch.randint(0, 256, (3, 50, 21), dtype=torch.uint8)
    masks = torch.zeros(5, 24, 8, dtype=torch.uint8)
    masks[:, 5:17, 1:6] = 1
    sample = transform.sample(torch.Generator().manual_seed(3))
    out, labels = transform.apply(image, masks, sample)
    assert out.shape == (3, *SIZE) and out.dtype == torch.float32
    assert labels.shape == (5, SIZE[0] // 4, SIZE[1] // 4) and labels.dtype == torch.float32
    assert transform.label_size == labels.shape[1:]
    assert labels.min() >= 0 and labels.max() <= 1
    assert ((labels > 0) & (labels < 1)).any()  # region edges off the 4 x 4 grid give soft labels
    # the labels are the area averages of the full-resolution masks, the image their ImageNet normalisation
    full_image, full_masks = transform.augment_uint8(image, masks, sample)
    blocks = full_masks.float().view(5, SIZE[0] // 4, 4, SIZE[1] // 4, 4).mean(dim=(2, 4))
    assert torch.allclose(labels, blocks)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(out, (full_image.float() / 255 - mean) / std, atol=1e-5)


def test_same_seed_same_output_other_seed_other_output() -> None:
    transform = TrainTransform(SIZE, augment(flip=0.5, pad=PAD, jitter=1.0, erase=0.5, hue=0.1))
    image = torch.randint(0, 256, (3, 40, 20), dtype=torch.uint8)
    masks = torch.randint(0, 2, (5, 24, 8), dtype=torch.uint8)
    a = transform(image, masks, torch.Generator().manual_seed(7))
    b = transform(image, masks, torch.Generator().manual_seed(7))
    c = transform(image, masks, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_the_global_random_generator_is_never_used() -> None:
    transform = TrainTransform(SIZE, augment(flip=0.5, pad=PAD, jitter=1.0, erase=1.0, hue=0.1))
    image, masks = scene()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for seed in range(5):
        transform(image, masks, torch.Generator().manual_seed(seed))
    assert torch.equal(torch.get_rng_state(), before)


def test_colour_jitter_changes_the_image_never_the_masks() -> None:
    transform = TrainTransform(SIZE, augment(flip=0.5, pad=PAD, jitter=1.0, hue=0.2), label_stride=1)
    image, masks = scene()
    sample = transform.sample(torch.Generator().manual_seed(1))
    assert sample.color is not None
    strong = dataclasses.replace(sample, color=ColorFactors(brightness=1.4, contrast=0.6, saturation=1.4, hue=0.2))
    plain_image, plain_labels = transform.apply(image, masks, dataclasses.replace(sample, color=None))
    for jitter in (sample.color, strong.color):
        out, labels = transform.apply(image, masks, dataclasses.replace(sample, color=jitter))
        assert torch.equal(labels, plain_labels)
        assert not torch.equal(out, plain_image)


def test_erasing_clears_the_erased_box_from_every_mask() -> None:
    params = augment(erase=1.0)
    transform = TrainTransform(SIZE, params, label_stride=1)
    image = torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8)
    masks = torch.ones(5, *SIZE, dtype=torch.uint8)
    erasing = params.random_erasing
    for seed in range(10):
        sample = transform.sample(torch.Generator().manual_seed(seed))
        assert sample.erase is not None
        e = sample.erase
        inside = torch.zeros(SIZE, dtype=torch.bool)
        inside[e.top : e.top + e.height, e.left : e.left + e.width] = True
        area = e.height * e.width / (SIZE[0] * SIZE[1])
        assert erasing.min_area * 0.7 <= area <= erasing.max_area * 1.3  # up to rounding to whole pixels
        out, labels = transform.augment_uint8(image, masks, sample)
        assert not labels[:, inside].any() and labels[:, ~inside].all()
        assert torch.equal(out[:, ~inside], image[:, ~inside])
        assert not torch.equal(out[:, inside], image[:, inside])  # filled with random values


def test_probability_zero_is_the_plain_resize() -> None:
    transform = TrainTransform(SIZE, augment(flip=0.0, pad=0, jitter=0.0, erase=0.0))
    image = torch.randint(0, 256, (3, 47, 23), dtype=torch.uint8)
    masks = torch.randint(0, 2, (5, 32, 16), dtype=torch.uint8)
    for seed in range(3):
        out, labels = transform(image, masks, torch.Generator().manual_seed(seed))
        assert torch.equal(out, TestTransform(SIZE)(image))
        nearest = masks.float().repeat_interleave(2, 1).repeat_interleave(2, 2)  # each mask cell is 2 x 2 pixels
        assert torch.equal(labels, F.avg_pool2d(nearest, 4))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="label_stride"):
        TrainTransform((64, 30), augment(), label_stride=4)
    transform = TrainTransform(SIZE, augment())
    with pytest.raises(ValueError, match="masks"):
        transform(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(4, 8, 8), torch.Generator())
    with pytest.raises(ValueError, match="uint8"):
        TestTransform(SIZE)(torch.zeros(3, 8, 8))


# ---- decoding -------------------------------------------------------------------------------------------------------


def test_decode_image_gives_rgb_uint8(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    image = decode_image(tmp_path / "a.png")
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1))
    grey = decode_image(str(tmp_path / "grey.png"))
    assert grey.shape == (3, 12, 7) and torch.equal(grey[0], grey[2])


def test_decode_image_names_the_bad_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 20, 3), 90, dtype=np.uint8)).save(buffer, format="JPEG")
    truncated = tmp_path / "0001_c1s1_000001_00.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    for path in (truncated, text, tmp_path / "missing.jpg"):
        with pytest.raises(CorruptImageError) as info:
            decode_image(path)
        message = str(info.value)
        assert str(path) in message and "reason: " in message
        assert ".cpp:" not in message  # torchvision's source location is cut from the reason
    with pytest.raises(CorruptImageError, match="truncated"):
        decode_image(truncated)


def test_a_partial_view_crops_the_labels_exactly_as_the_image() -> None:
    """The top half of the image, stretched to the input: the rectangle and its label double in height together."""
    transform = TrainTransform(SIZE, augment(), label_stride=1)
    image, masks = scene()
    sample = TrainSample(flip=False, top=0, left=0, crop=RowSpan(0, SIZE[0] // 2))
    out, labels = transform.apply(image, masks, sample)
    stretched = (2 * ROWS[0], 2 * ROWS[1], *COLS)
    assert box(labels[PART] > 0.5) == stretched
    assert box(red(out)) == stretched


def test_a_partial_view_below_a_part_removes_it_from_the_labels() -> None:
    transform = TrainTransform(SIZE, augment(), label_stride=1)
    image, masks = scene()
    out, labels = transform.apply(image, masks, TrainSample(flip=False, top=0, left=0, crop=RowSpan(32, 32)))
    assert not (labels[PART] > 0.5).any() and not red(out).any()


def test_an_occlusion_paints_the_rows_and_clears_them_from_every_mask() -> None:
    transform = TrainTransform(SIZE, augment(), label_stride=1)
    image, masks = scene()
    masks[4] = 1  # the whole body
    occlusion = Occlusion(RowSpan(14, SIZE[0] - 14), (0, 0, 255))
    out, labels = transform.apply(image, masks, TrainSample(flip=False, top=0, left=0, occlusion=occlusion))
    assert box(labels[PART] > 0.5) == (ROWS[0], 14, *COLS)
    assert not (labels[:, 14:] > 0).any() and (labels[4, :14] == 1).all()
    assert box(red(out)) == (ROWS[0], 14, *COLS)


def test_partial_views_are_drawn_with_the_configured_probability_and_extent() -> None:
    transform = TrainTransform(SIZE, augment(crop=0.5, occlude=0.25), label_stride=4)
    samples = [transform.sample(torch.Generator().manual_seed(seed), rows=128) for seed in range(400)]
    crops = [s.crop for s in samples if s.crop is not None]
    assert 0.4 < len(crops) / len(samples) < 0.6
    assert 0.15 < sum(s.occlusion is not None for s in samples) / len(samples) < 0.35
    assert all(0.35 * 128 - 1 <= c.height <= 0.9 * 128 + 1 and c.bottom <= 128 for c in crops)
    assert 0.7 < sum(c.top == 0 for c in crops) / len(crops) < 0.9
    again = transform.sample(torch.Generator().manual_seed(3), rows=128)
    assert again == samples[3]
