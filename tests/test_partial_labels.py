"""Partial views relabelled by the mask stage's own rule (`augment.partial.labels: keypoints`): an occluder that hides
the knees removes the lower body, a crop that cuts the knees off keeps it, exactly as `sanet masks` labels such
images; the keypoints follow every geometric step of the augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sanet.config import AugmentParams, ColorJitterParams, PartialViewParams, RandomErasingParams
from sanet.contracts.keypoints import COCO_KEYPOINTS
from sanet.contracts.parts import PARTS
from sanet.data.partial import RowSpan
from sanet.data.synthetic.people import Camera, Identity, render_person
from sanet.data.transforms import EraseBox, Occlusion, PersonKeypoints, TrainSample, TrainTransform
from sanet.masks.keypoints import flags_to_confidence
from sanet.masks.part_masks import LabelRule, part_masks, visibility

WIDTH, HEIGHT = 64, 128  # the stored image, also the network input here
RULE = LabelRule(min_confidence=0.3, min_area=0.005, size=(96, 32))
LOWER, FEET = PARTS.index("lower_body"), PARTS.index("feet")
KNEE, HIP = COCO_KEYPOINTS.index("left_knee"), COCO_KEYPOINTS.index("left_hip")


def augment(labels: str = "keypoints", pad: int = 0) -> AugmentParams:
    return AugmentParams(
        flip=0.0,
        pad=pad,
        color_jitter=ColorJitterParams(p=0.0),
        random_erasing=RandomErasingParams(p=0.0),
        partial=PartialViewParams(crop=0.0, occlude=0.0, labels=labels),
    )


@pytest.fixture(scope="module")
def person() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A synthetic pedestrian: uint8 image, its stored masks (the stage's rule) and keypoints (confidences)."""
    rendered = render_person(Identity.sample(0, 0, 3), Camera.sample(0, 0, 1), WIDTH, HEIGHT, np.random.default_rng(5))
    keypoints = flags_to_confidence(rendered.keypoints)
    masks = part_masks(keypoints, (WIDTH, HEIGHT), RULE.size, RULE.min_confidence, RULE.min_area)
    assert visibility(masks).all(), "the test person must show every part"
    image = torch.from_numpy(np.array(rendered.image.convert("RGB"))).permute(2, 0, 1).contiguous()
    return image, torch.from_numpy(masks), keypoints


def knee_row(keypoints: np.ndarray) -> float:
    return float(keypoints[[KNEE, KNEE + 1], 1].min())


def hip_row(keypoints: np.ndarray) -> float:
    return float(keypoints[[HIP, HIP + 1], 1].max())


def shown(labels: torch.Tensor) -> np.ndarray:
    return labels.flatten(1).gt(0).any(1).numpy()


def test_an_occluder_over_the_knees_removes_the_lower_body_as_the_mask_stage_would(person) -> None:
    image, masks, keypoints = person
    first = round((hip_row(keypoints) + knee_row(keypoints)) / 2)  # thigh tops above it, knees below
    sample = TrainSample(flip=False, top=0, left=0, occlusion=Occlusion(RowSpan(first, HEIGHT - first), (9, 9, 9)))
    by_rows = TrainTransform((HEIGHT, WIDTH), augment("rows"), label_stride=1)
    by_keypoints = TrainTransform((HEIGHT, WIDTH), augment("keypoints"), label_stride=1)
    _, rows_labels = by_rows.apply(image, masks, sample, PersonKeypoints(keypoints, RULE))
    _, kps_labels = by_keypoints.apply(image, masks, sample, PersonKeypoints(keypoints, RULE))
    assert shown(rows_labels)[LOWER]  # the rows alone leave the thigh tops labelled as the lower body
    hidden = keypoints.copy()
    hidden[hidden[:, 1] >= first, 2] = 0  # the stage's label of the occluded image: the covered keypoints are hidden
    stage = visibility(part_masks(hidden, (WIDTH, HEIGHT), RULE.size, RULE.min_confidence, RULE.min_area))
    assert not stage[LOWER] and not stage[FEET]
    assert np.array_equal(shown(kps_labels), stage)
    assert torch.equal(kps_labels[~torch.from_numpy(stage)], torch.zeros_like(kps_labels[~torch.from_numpy(stage)]))
    kept = torch.from_numpy(stage)
    assert torch.equal(kps_labels[kept], rows_labels[kept])  # the visible parts keep their cropped masks


def test_a_crop_that_cuts_the_knees_off_keeps_the_lower_body_as_the_mask_stage_would(person) -> None:
    image, masks, keypoints = person
    bottom = round((hip_row(keypoints) + knee_row(keypoints)) / 2)
    transform = TrainTransform((HEIGHT, WIDTH), augment(), label_stride=1)
    sample = TrainSample(flip=False, top=0, left=0, crop=RowSpan(0, bottom))
    _, labels = transform.apply(image, masks, sample, PersonKeypoints(keypoints, RULE))
    cropped = keypoints.copy()
    cropped[cropped[:, 1] >= bottom] = 0  # as `Rendered.crop` leaves the keypoints of a partial probe
    stage = visibility(part_masks(cropped, (WIDTH, bottom), RULE.size, RULE.min_confidence, RULE.min_area))
    assert stage[LOWER] and not stage[FEET]
    assert np.array_equal(shown(labels), stage)


def test_a_holistic_sample_is_not_relabelled(person) -> None:
    image, masks, keypoints = person
    transform = TrainTransform((HEIGHT, WIDTH), augment(pad=6), label_stride=4)
    sample = TrainSample(flip=True, top=12, left=0)  # shifted up by 6 rows: the feet leave the frame partly
    nothing = np.zeros_like(keypoints)  # keypoints that would clear every part, were they consulted
    _, plain = transform.apply(image, masks, sample)
    _, relabelled = transform.apply(image, masks, sample, PersonKeypoints(nothing, RULE))
    assert torch.equal(plain, relabelled)


def test_keypoints_follow_the_crop_the_resize_the_flip_and_the_shift() -> None:
    transform = TrainTransform((HEIGHT, WIDTH), augment(pad=6), label_stride=1)
    points = np.zeros((17, 3))
    points[0] = (10.0, 40.0, 1.0)  # inside the crop below
    points[1] = (10.0, 10.0, 1.0)  # above it
    points[2] = (60.0, 70.0, 1.0)  # inside the crop; mirrored to the left edge, or shifted off the right one
    sample = TrainSample(flip=True, top=2, left=10, crop=RowSpan(32, 64))
    moved = transform.view_keypoints(points, sample, (HEIGHT, WIDTH))
    # rows 32..96 stretched 2x to 128 rows; columns mirrored (x -> 64 - x); then shifted by pad - offset
    assert moved[0] == pytest.approx((64 - 10 + 6 - 10, (40 - 32) * 2 + 6 - 2, 1.0))
    assert moved[1, 2] == 0 and moved[2, 2] == 1  # the first left the crop
    sample = TrainSample(flip=False, top=6, left=0, crop=RowSpan(32, 64))
    assert transform.view_keypoints(points, sample, (HEIGHT, WIDTH))[2, 2] == 0  # x = 66: off the right edge


def test_keypoints_under_an_erased_box_or_an_occluder_are_missing() -> None:
    transform = TrainTransform((HEIGHT, WIDTH), augment(), label_stride=1)
    points = np.array([(20.0, 30.0, 1.0), (20.0, 100.0, 1.0), (50.0, 30.0, 0.9)] + [(0.0, 0.0, 0.0)] * 14)
    sample = TrainSample(
        flip=False,
        top=0,
        left=0,
        erase=EraseBox(top=20, left=10, height=20, width=20, fill_seed=0),
        occlusion=Occlusion(RowSpan(90, HEIGHT - 90), (0, 0, 0)),
    )
    moved = transform.view_keypoints(points, sample, (HEIGHT, WIDTH))
    assert moved[:3, 2].tolist() == [0.0, 0.0, 0.9]
    with pytest.raises(ValueError, match=r"\(17, 3\)"):
        transform.view_keypoints(points[:5], sample, (HEIGHT, WIDTH))
