"""SANet's losses: batch-hard triplet with missing parts, focal loss on masks, and the total of Eq. 6."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torchvision.ops import sigmoid_focal_loss

from sanet.config import resolve
from sanet.contracts.parts import NUM_PARTS, PARTS
from sanet.train.losses import (
    SANetLoss,
    batch_hard_triplet,
    build_criterion,
    downsample_masks,
    focal_loss,
    part_presence,
)


def test_batch_hard_triplet_matches_a_hand_computation() -> None:
    features = torch.tensor([[0.0], [1.0], [3.0], [3.5]])
    pids = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest positive 1.0, nearest negative 3.0 -> relu(1 - 3 + 0.3) = 0
    # anchor 1: 1.0 vs 2.0 -> 0 ; anchor 2: 0.5 vs 2.0 -> 0 ; anchor 3: 0.5 vs 2.5 -> 0
    assert batch_hard_triplet(features, pids, margin=0.3).item() == pytest.approx(0.0)
    # margin 1.6: anchors give 1 - 3 + 1.6 = -0.4 -> 0, 1 - 2 + 1.6 = 0.6, 0.5 - 2 + 1.6 = 0.1, 0.5 - 2.5 + 1.6 = -0.4
    assert batch_hard_triplet(features, pids, margin=1.6).item() == pytest.approx((0.6 + 0.1) / 4, abs=1e-5)


def test_missing_parts_do_not_count_in_the_triplet_loss() -> None:
    torch.manual_seed(0)
    features = torch.randn(6, 8)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    valid = torch.tensor([True, True, True, True, False, True])
    reference = batch_hard_triplet(features, pids, valid)
    moved = features.clone()
    moved[4] = 100.0  # an absent part's feature: neither anchor, positive nor negative
    assert batch_hard_triplet(moved, pids, valid).item() == pytest.approx(reference.item())
    # image 5 has lost its only positive: as anchor it is skipped, so the loss equals that of the first four
    assert reference.item() == pytest.approx(batch_hard_triplet(features[:4], pids[:4], margin=0.3).item(), abs=1e-6)


def test_triplet_without_any_valid_anchor_is_zero_and_differentiable() -> None:
    features = torch.randn(4, 3, requires_grad=True)
    loss = batch_hard_triplet(features, torch.tensor([0, 1, 2, 3]))  # no positives anywhere
    loss.backward()
    assert loss.item() == 0.0 and features.grad is not None and torch.isfinite(features.grad).all()


def test_triplet_gradient_is_finite_with_identical_features() -> None:
    features = torch.ones(4, 3, requires_grad=True)
    batch_hard_triplet(features, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)])
def test_focal_loss_on_binary_targets_matches_torchvision(alpha: float, gamma: float) -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 6, 4) * 3, (torch.rand(2, 6, 4) > 0.5).float()
    expected = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="mean")
    torch.testing.assert_close(focal_loss(logits, targets, alpha, gamma, normalize="mean"), expected)
    # RetinaNet's (and HPNet's) normalisation: the sum over cells divided by the number of positive cells.
    summed = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="sum")
    torch.testing.assert_close(focal_loss(logits, targets, alpha, gamma), summed / targets.sum())


def test_the_focal_loss_is_normalised_by_positive_cells_not_by_all_cells() -> None:
    """A part covering one cell in 24 weighs as much as one covering every cell (the mean would make it 24x weaker)."""
    logits = torch.zeros(1, 24, 8)
    small, large = torch.zeros(1, 24, 8), torch.ones(1, 24, 8)
    small[0, 0, 0] = 1
    one_cell = focal_loss(logits, small, 0.5, 0.0) - focal_loss(logits[..., :0], small[..., :0], 0.5, 0.0)
    assert one_cell.item() > 20 * focal_loss(logits, small, 0.5, 0.0, normalize="mean").item()
    torch.testing.assert_close(focal_loss(logits, large, 0.5, 0.0), focal_loss(logits, large, 0.5, 0.0, "mean"))
    empty = focal_loss(logits, torch.zeros(1, 24, 8), 0.5, 0.0)  # no positive cell: the sum itself
    torch.testing.assert_close(empty, focal_loss(logits, torch.zeros(1, 24, 8), 0.5, 0.0, "mean") * 24 * 8)


def test_soft_focal_loss_is_smallest_at_the_target() -> None:
    targets = torch.full((1, 4, 2), 0.3)
    at_target = focal_loss(torch.logit(targets), targets, 0.5, 2.0)
    assert at_target.item() < focal_loss(torch.zeros(1, 4, 2), targets, 0.5, 2.0).item()


def test_mask_labels_are_downsampled_from_any_resolution() -> None:
    labels = torch.zeros(1, 2, 8, 4)
    labels[0, 0, :4] = 1.0  # top half
    labels[0, 1, 0, 0] = 1.0  # one pixel of 32
    soft = downsample_masks(labels, (4, 2), "soft")
    assert soft.shape == (1, 2, 4, 2)
    assert torch.equal(soft[0, 0], torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    assert soft[0, 1, 0, 0].item() == pytest.approx(0.25)
    binary = downsample_masks(labels, (4, 2), "binary")
    assert binary[0, 1].sum().item() == 0.0 and torch.equal(binary[0, 0], soft[0, 0])
    assert downsample_masks(labels, (16, 8), "soft").shape == (1, 2, 16, 8)  # a smaller label is repeated
    assert torch.equal(part_presence(labels), torch.tensor([[True, True]]))
    # any: the one-pixel part still marks its cell, so a present part always has a target cell at 1
    anywhere = downsample_masks(labels, (4, 2))
    assert torch.equal(anywhere[0, 0], soft[0, 0])
    assert anywhere[0, 1, 0, 0].item() == 1.0 and anywhere[0, 1].sum().item() == 1.0
    assert torch.equal(downsample_masks(labels, (16, 8)).amax(dim=(2, 3)) > 0.5, part_presence(labels))
    with pytest.raises(ValueError, match="any, soft, binary"):
        downsample_masks(labels, (4, 2), "fuzzy")


def fake_output(parts: tuple[int, ...], batch: int = 4, classes: int = 3, requires_grad: bool = False) -> dict:
    generator = torch.Generator().manual_seed(0)
    p = len(parts)
    out = {
        "logits": torch.randn(batch, p, classes, generator=generator),
        "features": torch.randn(batch, p, 16, generator=generator),
        "masks": torch.randn(batch, p, 4, 2, generator=generator),
    }
    for value in out.values():
        value.requires_grad_(requires_grad)
    return {**out, "visibility": torch.ones(batch, p, dtype=torch.bool), "parts": parts}


def labels_all_present(batch: int = 4, size: tuple[int, int] = (16, 8)) -> torch.Tensor:
    labels = torch.zeros(batch, NUM_PARTS, *size)
    labels[..., : size[0] // 2, :] = 1.0
    return labels


def test_total_is_the_weighted_sum_of_the_terms() -> None:
    criterion = SANetLoss(id_weight=1.0, triplet_weight=0.1, focal_weight=2.0)
    out, pids = fake_output(tuple(range(NUM_PARTS))), torch.tensor([0, 0, 1, 1])
    loss, terms = criterion(out, pids, labels_all_present())
    assert terms["total"] == pytest.approx(loss.item())
    assert loss.item() == pytest.approx(terms["id"] + 0.1 * terms["triplet"] + 2.0 * terms["focal"], rel=1e-5)
    assert set(terms) == {"total", "id", "triplet", "focal"} | {
        f"{term}/{part}" for term in ("id", "triplet", "focal") for part in PARTS
    }
    expected_id = sum(F.cross_entropy(out["logits"][:, i], pids).item() for i in range(NUM_PARTS))
    assert terms["id"] == pytest.approx(expected_id, rel=1e-5)


def test_hpnet_output_uses_the_labels_of_its_four_parts() -> None:
    out = fake_output((0, 1, 2, 3))
    _, terms = SANetLoss()(out, torch.tensor([0, 0, 1, 1]), labels_all_present())
    assert "id/global" not in terms and "focal/feet" in terms


def test_an_absent_part_does_not_count_in_the_id_loss_but_does_in_the_focal_loss() -> None:
    out, pids = fake_output(tuple(range(NUM_PARTS)), requires_grad=True), torch.tensor([0, 0, 1, 1])
    labels = labels_all_present()
    labels[2, 0] = 0.0  # image 2 shows no head
    loss, _ = SANetLoss()(out, pids, labels)
    loss.backward()
    assert not out["logits"].grad[2, 0].any() and out["logits"].grad[2, 1].any()
    assert out["masks"].grad[2, 0].any()


def test_bad_mask_label_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\(B, 5, H, W\)"):
        SANetLoss()(fake_output(tuple(range(NUM_PARTS))), torch.tensor([0, 0, 1, 1]), torch.zeros(4, 4, 8, 4))


def test_build_criterion_reads_the_parameters(params_file: Path) -> None:
    raw = yaml.safe_load(params_file.read_text())
    params = resolve(raw, ["loss.triplet_weight=0.5", "loss.focal_alpha=0.4", "loss.mask_target=binary"])
    criterion = build_criterion(params)
    assert (criterion.triplet_weight, criterion.focal_alpha, criterion.mask_target) == (0.5, 0.4, "binary")
    assert criterion.triplet_margin == params.loss.triplet_margin == 0.3


def test_the_loss_is_float32_inside_an_autocast_region() -> None:
    out = fake_output(tuple(range(NUM_PARTS)))
    out = {**out, **{k: out[k].bfloat16() for k in ("logits", "features", "masks")}}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, terms = SANetLoss()(out, torch.tensor([0, 0, 1, 1]), labels_all_present())
    assert loss.dtype == torch.float32 and terms["total"] == pytest.approx(loss.item())
