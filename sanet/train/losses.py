"""SANet's training loss (paper Eq. 6): per branch, ID + triplet_weight x triplet + focal, summed over branches.

    criterion = build_criterion(params)
    loss, terms = criterion(model(images), pids, mask_labels)   # model in training mode

- ID: cross-entropy of each branch's classifier logits (optional label smoothing).
- Triplet: batch-hard triplet loss (Hermans et al., 2017) with a margin on F, the features before the BNNeck,
  Euclidean distance.
- Focal: the binary focal loss (Lin et al., 2017) between each branch's mask and its mask label downsampled to the
  mask size (the paper's DS).

Mask labels are a float tensor (B, 5, H, W) in [0, 1], in `sanet.contracts.parts.PARTS` order, at any resolution.
They are downsampled to the mask size (stride 16) in one of three ways (`loss.mask_target`):
- `any` (default): a cell is 1 when it holds a label pixel above 0.5. This keeps the mask consistent with the
  presence rule below: a present part has at least one target cell at 1, so a branch that learns its mask predicts
  visibility (Eq. 5: a probability above 0.5) exactly for the parts the image shows. Area-based targets break that
  at stride 16: a head or feet covering less than half of every cell gets no cell above 0.5 even when fully visible
  (on the demo's 128 x 64 input, a cell is 16 x 16 pixels of a person about 20 pixels wide).
- `soft`: the area average (adaptive average pooling, which repeats values when the label is smaller);
- `binary`: the area average thresholded at 0.5. The soft focal loss is |t - p|^gamma x BCE(p, t), weighted by
alpha t + (1 - alpha)(1 - t); for binary t this is exactly Lin et al.'s. Per branch it is summed over the batch's
cells and divided by the number of positive cells (`loss.focal_normalize: positive`, RetinaNet's normalisation and
HPNet's, the paper's baseline); `mean` averages over all cells instead, which at the paper's 24 x 8 grid makes the
term 2.5x (global) to 28x (feet) weaker, the fraction of cells a part covers.

Choices of ours: a part is *present* in an image when its full-resolution label has a pixel above 0.5. A part missing
from an image does not count in that branch's triplet loss (it is neither anchor, positive nor negative) nor in its
ID loss (the feature of an absent part carries no identity; as VPM does), but does count in the focal loss, which
teaches the branch to predict an empty mask, and hence visibility False, for it. A branch's ID loss is averaged over
the images where the part is present; anchors without a present positive and negative are skipped.

The returned `terms` are floats for logging: `total` (the weighted sum that is optimised), the unweighted sums
over branches `id`, `triplet`, `focal`, and per branch `id/<part>`, `triplet/<part>`, `focal/<part>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sanet.contracts.parts import NUM_PARTS, PARTS, PRESENCE_THRESHOLD

if TYPE_CHECKING:
    from sanet.config import Params

MASK_TARGETS = ("any", "soft", "binary")


def downsample_masks(labels: Tensor, size: tuple[int, int], target: str = "any") -> Tensor:
    """(B, P, H, W) labels -> (B, P, h, w): `any` marks a cell holding a label pixel above 0.5 (binary); `soft` is
    the area average, `binary` the area average thresholded at 0.5."""
    if target not in MASK_TARGETS:
        raise ValueError(f"mask target must be one of {', '.join(MASK_TARGETS)}, got {target!r}")
    if target == "any":
        present = (labels > PRESENCE_THRESHOLD).to(labels.dtype)
        return present if tuple(labels.shape[-2:]) == tuple(size) else F.adaptive_max_pool2d(present, size)
    out = labels if tuple(labels.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(labels, size)
    return (out >= 0.5).to(labels.dtype) if target == "binary" else out


def part_presence(labels: Tensor) -> Tensor:
    """(B, P) bool: whether each part's label has any pixel above 0.5."""
    return labels.flatten(2).amax(dim=2) > PRESENCE_THRESHOLD


FOCAL_NORMALIZATIONS = ("positive", "mean")


def focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, normalize: str = "positive"
) -> Tensor:
    """Binary focal loss of mask logits against (possibly soft) targets in [0, 1], summed over cells and divided by
    the number of positive cells (`positive`: RetinaNet's and HPNet's normalisation, at least 1) or averaged over all
    cells (`mean`)."""
    if normalize not in FOCAL_NORMALIZATIONS:
        raise ValueError(f"focal normalisation must be one of {', '.join(FOCAL_NORMALIZATIONS)}, got {normalize!r}")
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    modulation = (targets - prob).abs().clamp_min(1e-12).pow(gamma) if gamma else 1.0
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    loss = weight * modulation * bce
    if normalize == "mean":
        return loss.mean()
    return loss.sum() / (targets > PRESENCE_THRESHOLD).sum().clamp_min(1)


def batch_hard_triplet(features: Tensor, pids: Tensor, valid: Tensor | None = None, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss: for every valid anchor, its farthest valid positive and nearest valid negative.

    Args:
        features: (B, D); pids: (B,) identity labels; valid: (B,) bool, the images taking part (all if None).
    Returns:
        The mean of relu(d(a, p) - d(a, n) + margin) over the anchors that have a valid positive and negative
        (0, still attached to the graph, when there is none).
    """
    if valid is None:
        valid = torch.ones_like(pids, dtype=torch.bool)
    squared = features.pow(2).sum(1)
    dist = (squared[:, None] + squared[None, :] - 2 * features @ features.t()).clamp_min(1e-12).sqrt()
    same = pids[:, None] == pids[None, :]
    pair = valid[:, None] & valid[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    positive = same & ~eye & pair
    negative = ~same & pair
    hardest_pos = torch.where(positive, dist, torch.zeros_like(dist)).amax(dim=1)
    far = dist.detach().max() + 1.0  # larger than any distance: never chosen as the nearest negative
    hardest_neg = torch.where(negative, dist, far.expand_as(dist)).amin(dim=1)
    anchors = valid & positive.any(dim=1) & negative.any(dim=1)
    losses = F.relu(hardest_pos - hardest_neg + margin)
    return torch.where(anchors, losses, torch.zeros_like(losses)).sum() / anchors.sum().clamp_min(1)


class SANetLoss(nn.Module):
    """The total loss of Eq. 6 (see the module docstring); call as `criterion(model_output, pids, mask_labels)`."""

    def __init__(
        self,
        id_weight: float = 1.0,
        triplet_weight: float = 0.1,
        triplet_margin: float = 0.3,
        focal_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
        mask_target: str = "any",
        focal_normalize: str = "positive",
    ) -> None:
        super().__init__()
        if focal_normalize not in FOCAL_NORMALIZATIONS:
            raise ValueError(f"focal normalisation must be one of {', '.join(FOCAL_NORMALIZATIONS)}")
        self.focal_normalize = focal_normalize
        self.id_weight, self.triplet_weight, self.focal_weight = id_weight, triplet_weight, focal_weight
        self.triplet_margin = triplet_margin
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.label_smoothing = label_smoothing
        self.mask_target = mask_target

    def forward(self, out: Mapping[str, Any], pids: Tensor, mask_labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Return the total loss and its per-term breakdown.

        Args:
            out: the training-mode output of `SANet` (`logits`, `features`, `masks`, `parts`).
            pids: (B,) int64 identity labels in [0, num_classes).
            mask_labels: (B, 5, H, W) float in [0, 1], any H, W.
        """
        if mask_labels.dim() != 4 or mask_labels.shape[1] != NUM_PARTS:
            raise ValueError(f"mask labels must be (B, {NUM_PARTS}, H, W), got {tuple(mask_labels.shape)}")
        # float32 throughout, also when called inside an autocast region (distances and logs are precision-sensitive)
        with torch.autocast(out["features"].device.type, enabled=False):
            return self._compute(out, pids, mask_labels)

    def _compute(self, out: Mapping[str, Any], pids: Tensor, mask_labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        parts: tuple[int, ...] = tuple(out["parts"])
        logits, features, masks = (out[key].float() for key in ("logits", "features", "masks"))
        labels = mask_labels[:, list(parts)].float()
        present = part_presence(labels)
        targets = downsample_masks(labels, tuple(masks.shape[-2:]), self.mask_target)
        total = features.new_zeros(())
        named: dict[str, Tensor] = {}
        for i, part in enumerate(parts):
            valid = present[:, i]
            ce = F.cross_entropy(logits[:, i], pids, label_smoothing=self.label_smoothing, reduction="none")
            id_loss = (ce * valid).sum() / valid.sum().clamp_min(1)
            triplet = batch_hard_triplet(features[:, i], pids, valid, self.triplet_margin)
            focal = focal_loss(masks[:, i], targets[:, i], self.focal_alpha, self.focal_gamma, self.focal_normalize)
            total = total + self.id_weight * id_loss + self.triplet_weight * triplet + self.focal_weight * focal
            named.update(
                {f"id/{PARTS[part]}": id_loss, f"triplet/{PARTS[part]}": triplet, f"focal/{PARTS[part]}": focal}
            )
        values = torch.stack([total, *named.values()]).detach().float().cpu().tolist()  # one device sync
        terms = {"total": values[0], **dict(zip(named, values[1:], strict=True))}
        for name in ("id", "triplet", "focal"):
            terms[name] = sum(v for k, v in terms.items() if k.startswith(f"{name}/"))
        return total, terms


def build_criterion(params: Params) -> SANetLoss:
    """The loss `params.loss` describes."""
    loss = params.loss
    return SANetLoss(
        id_weight=loss.id_weight,
        triplet_weight=loss.triplet_weight,
        triplet_margin=loss.triplet_margin,
        focal_weight=loss.focal_weight,
        focal_alpha=loss.focal_alpha,
        focal_gamma=loss.focal_gamma,
        label_smoothing=loss.label_smoothing,
        mask_target=loss.mask_target,
        focal_normalize=loss.focal_normalize,
    )
