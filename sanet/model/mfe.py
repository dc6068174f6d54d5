"""Multi-branch Feature Extension (MFE, paper section 3.2, Eqs. 4-5): one unshared branch per body part.

Each branch is a copy of the backbone's layer4 with its last stride set to 1 (so the branch output stays at
stride 16, 24 x 8 at 384 x 128), initialised from the backbone's (pretrained) layer4, followed by

- a two-conv segmentation head (3x3 conv, BN, ReLU, 1x1 conv to one channel) giving the mask logits; m = sigmoid,
- the part feature F = MaxPool(m * f) (Eq. 4), a global max pool of the mask-weighted layer4 features, where m is
  the mask binarised at 0.5 (`pool_mask: binary`, as HPNet, the paper's baseline, pools) so that only the focal loss
  shapes the mask, or the soft sigmoid mask (`soft`), through which the ID and triplet losses also pull on it,
- the visibility v = any(m > 0.5) (Eq. 5), i.e. at least one mask pixel above one half,
- a BNNeck (Luo et al., 2019: BatchNorm1d with a frozen zero bias) and a bias-free linear identity classifier.

The triplet loss uses F (before the BNNeck) and the ID loss the classifier logits of BN(F). At test time the paper
compares F with the Euclidean distance (Eq. 7); `test_feature: post_bn` returns BN(F) instead.
The segmentation head's hidden width (`model.mfe.seg_channels`) is not in the paper.
"""

from __future__ import annotations

from typing import NamedTuple, cast

from torch import Tensor, nn

VISIBILITY_THRESHOLD = 0.5
"""Eq. 5: a part is visible when at least one mask probability exceeds this."""

POOL_MASKS = ("binary", "soft")
"""What Eq. 4 multiplies the features with: the mask binarised at VISIBILITY_THRESHOLD, or its soft probabilities."""


class BranchOutput(NamedTuple):
    """One branch's output for a batch.

    Attributes:
        feature: (B, D) F of Eq. 4, before the BNNeck.
        bn_feature: (B, D) BNNeck(F).
        mask_logits: (B, h, w) segmentation logits; the mask is their sigmoid.
        visibility: (B,) bool, Eq. 5.
    """

    feature: Tensor
    bn_feature: Tensor
    mask_logits: Tensor
    visibility: Tensor


class PartBranch(nn.Module):
    """One MFE branch: layer4 copy, segmentation head, masked max pooling, BNNeck, classifier.

    Args:
        layer4: this branch's own copy of layer4 (already with last stride 1).
        channels: layer4's output channels D.
        seg_channels: hidden channels of the segmentation head.
        num_classes: training identities (classifier outputs).
    """

    def __init__(
        self, layer4: nn.Module, channels: int, seg_channels: int, num_classes: int, pool_mask: str = "binary"
    ) -> None:
        super().__init__()
        if pool_mask not in POOL_MASKS:
            raise ValueError(f"pool_mask must be one of {', '.join(POOL_MASKS)}, got {pool_mask!r}")
        self.pool_mask = pool_mask
        self.layer4 = layer4
        self.seg_head = nn.Sequential(
            nn.Conv2d(channels, seg_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(seg_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(seg_channels, 1, 1),
        )
        self.bnneck = nn.BatchNorm1d(channels)
        self.bnneck.bias.requires_grad_(False)  # BNNeck: no shift, so the BN features stay centred for the classifier
        self.classifier = nn.Linear(channels, num_classes, bias=False)
        # Sequential's items are typed as plain Modules: their parameters are Tensors (Conv2d, bias=True).
        nn.init.kaiming_normal_(cast(Tensor, self.seg_head[0].weight), mode="fan_out", nonlinearity="relu")
        nn.init.normal_(cast(Tensor, self.seg_head[3].weight), std=0.01)
        nn.init.zeros_(cast(Tensor, self.seg_head[3].bias))
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: Tensor) -> BranchOutput:
        f = self.layer4(x)
        mask_logits = self.seg_head(f)  # (B, 1, h, w)
        mask = mask_logits.sigmoid()
        above = mask > VISIBILITY_THRESHOLD
        pooling = above.to(f.dtype) if self.pool_mask == "binary" else mask
        feature = (pooling * f).amax(dim=(2, 3))  # Eq. 4
        visibility = above.flatten(1).any(dim=1)  # Eq. 5
        return BranchOutput(feature, self.bnneck(feature), mask_logits.squeeze(1), visibility)
