"""SANet assembly and the paper's Table 3 ablation variants.

    images -> trunk (stem..layer3, shared) -> [AFE] -> one MFE branch per part -> features, masks, visibility

| `model.variant` | AFE | branches |
|---|---|---|
| `hpnet` | none | head, upper body, lower body, feet (HPNet, the paper's baseline) |
| `global` | none | the four parts + global |
| `fixed_fe` | every path always on, static | the four parts + global |
| `sanet` | adaptive (Gumbel-softmax routing, argmax at eval) | the four parts + global |

Forward output (a dict of tensors, part order `sanet.contracts.parts.PARTS`):

Training mode, over the model's P branches (P = 4 for `hpnet`, 5 otherwise; `out["parts"]` gives their indices in
`PARTS`):
- `logits` (B, P, num_classes): identity logits of BNNeck(F);
- `features` (B, P, D): F of Eq. 4, before the BNNeck (the triplet loss's input);
- `masks` (B, P, h, w): mask *logits* at stride 16 (the focal loss applies the sigmoid);
- `visibility` (B, P) bool: Eq. 5 on the predicted masks;
- `parts`: tuple of the branches' indices in `PARTS`.

Eval mode, always over the five parts (the input of `sanet.metrics.part_distance`):
- `features` (B, 5, D) float: F (or BNNeck(F) with `model.mfe.test_feature: post_bn`);
- `visibility` (B, 5) bool;
- `masks` (B, 5, h, w): mask logits.
For `hpnet` the global row is zero features, visibility False and a mask logit of -1e4 (probability 0).

Both modes, for `fixed_fe` and `sanet`: `path_weights` (B, layers, 3, 3) and, for `sanet`, `routing` (B, layers, 3)
int64: per image and layer, the path (`UP`, `KEEP`, `DOWN`) each cell (stride 8, 16, 32) took, `NOT_REACHED` (-1)
for cells the image did not reach (see `sanet.model.afe`). `model.temperature` reads and sets the Gumbel-softmax
temperature (for a schedule); it is None for variants without adaptive routing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from sanet.contracts.parts import LOCAL_PARTS, NUM_PARTS, PARTS
from sanet.contracts.variants import VARIANTS
from sanet.model.afe import AFE, routing_from
from sanet.model.backbone import Backbone, build_backbone, fresh_stage, last_stride_one
from sanet.model.mfe import PartBranch

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sanet.config import AFEParams, MFEParams, Params

HIDDEN_MASK_LOGIT = -1e4
"""Eval mask logit of a part the variant has no branch for (hpnet's global row)."""


def variant_parts(variant: str) -> tuple[int, ...]:
    """Indices in `PARTS` of the branches a variant has."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    names = LOCAL_PARTS if variant == "hpnet" else PARTS
    return tuple(PARTS.index(name) for name in names)


class SANet(nn.Module):
    """SANet or one of its ablations (see the module docstring for the forward contract).

    Args:
        backbone: the split ResNet (weights already loaded); its layer4 initialises every branch.
        variant: `hpnet`, `global`, `fixed_fe` or `sanet`.
        num_classes: training identities.
        afe: AFE parameters (used by `fixed_fe` and `sanet`).
        mfe: branch parameters.
    """

    def __init__(self, backbone: Backbone, variant: str, num_classes: int, afe: AFEParams, mfe: MFEParams) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.variant = variant
        self.parts = variant_parts(variant)
        self.test_feature = mfe.test_feature
        self.trunk = backbone.trunk
        self.afe: AFE | None = None
        if variant in ("fixed_fe", "sanet"):
            self.afe = AFE(
                backbone.trunk_channels,
                layers=afe.layers,
                kernel=afe.kernel,
                width=afe.width,
                adaptive=variant == "sanet",
                temperature=afe.temperature,
                hard=afe.hard,
                residual=afe.residual,
            )
        self.feature_dim = mfe.width or backbone.out_channels

        def branch_stage() -> nn.Module:
            if mfe.width:  # from scratch: a narrower stage of its own, initialised independently per branch
                return fresh_stage(backbone.layer4, backbone.trunk_channels, mfe.width)
            return last_stride_one(backbone.layer4)

        self.branches = nn.ModuleList(
            PartBranch(branch_stage(), self.feature_dim, mfe.seg_channels, num_classes, mfe.pool_mask)
            for _ in self.parts
        )

    @property
    def temperature(self) -> float | None:
        """The Gumbel-softmax temperature of the adaptive AFE (None for the other variants)."""
        return self.afe.temperature if self.afe is not None and self.afe.adaptive else None

    @temperature.setter
    def temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"the Gumbel-softmax temperature must be positive, got {value}")
        if self.afe is not None:
            self.afe.temperature = float(value)

    def set_temperature(self, value: float) -> None:
        """Set the Gumbel-softmax temperature (a no-op for variants without adaptive routing)."""
        self.temperature = value

    def forward(self, images: Tensor) -> dict[str, Tensor | tuple[int, ...]]:
        x = self.trunk(images)
        out: dict[str, Tensor | tuple[int, ...]] = {}
        if self.afe is not None:
            afe = self.afe(x)
            x = afe.features
            out["path_weights"] = afe.path_weights
            if self.afe.adaptive:
                out["routing"] = routing_from(afe.path_weights, afe.reached)
        branches = [branch(x) for branch in self.branches]
        masks = torch.stack([b.mask_logits for b in branches], dim=1)
        visibility = torch.stack([b.visibility for b in branches], dim=1)
        if self.training:
            part_branches = cast("Iterable[PartBranch]", self.branches)  # the ModuleList holds PartBranch modules
            logits = [branch.classifier(b.bn_feature) for branch, b in zip(part_branches, branches, strict=True)]
            out.update(
                logits=torch.stack(logits, dim=1),
                features=torch.stack([b.feature for b in branches], dim=1),
                masks=masks,
                visibility=visibility,
                parts=self.parts,
            )
            return out
        feats = torch.stack([b.bn_feature if self.test_feature == "post_bn" else b.feature for b in branches], dim=1)
        if len(self.parts) < NUM_PARTS:
            feats, visibility, masks = _pad_parts(self.parts, feats, visibility, masks)
        out.update(features=feats, visibility=visibility, masks=masks)
        return out


def _pad_parts(parts: tuple[int, ...], feats: Tensor, visibility: Tensor, masks: Tensor) -> tuple[Tensor, ...]:
    """Spread P branches over the five part rows: absent parts get zero features, visibility False, mask prob 0."""
    batch = feats.shape[0]
    full_feats = feats.new_zeros(batch, NUM_PARTS, feats.shape[2])
    full_vis = visibility.new_zeros(batch, NUM_PARTS)
    full_masks = masks.new_full((batch, NUM_PARTS, *masks.shape[2:]), HIDDEN_MASK_LOGIT)
    index = list(parts)
    full_feats[:, index], full_vis[:, index], full_masks[:, index] = feats, visibility, masks
    return full_feats, full_vis, full_masks


def build_model(params: Params, num_classes: int) -> SANet:
    """The model `params.model` describes, with `num_classes` training identities.

    Raises:
        WeightsError: `model.pretrained` names weights that are absent or do not fit (see `sanet.model.backbone`).
    """
    model = params.model
    backbone = build_backbone(model.backbone, model.pretrained, model.imagenet_weights)
    return SANet(backbone, model.variant, num_classes, model.afe, model.mfe)
