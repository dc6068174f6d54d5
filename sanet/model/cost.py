"""Parameter and multiply-accumulate (MAC) counts of the variants: `sanet model summary` and the cost benchmark.

MACs are counted with `torch.utils.flop_counter.FlopCounterMode` on an eval-mode forward (convolutions and matrix
products; 1 MAC = 2 FLOPs; BN, activations, pooling and resampling are not counted, as is usual). For the adaptive
`sanet` variant the cost depends on the route each image takes; it is the mean per image over the given batch.
Parameter counts leave out the identity classifiers, whose size depends on the training set and which inference
does not run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sanet.model.backbone import build_backbone
from sanet.model.sanet import VARIANTS, SANet

if TYPE_CHECKING:
    from sanet.config import ModelParams


@dataclass(frozen=True)
class ModelCost:
    """One row of the summary: a variant at one AFE setting (`layers`/`kernel` are None without an AFE)."""

    variant: str
    layers: int | None
    kernel: int | None
    params: int
    afe_params: int
    macs: float


def count_parameters(model: nn.Module, classifiers: bool = False) -> int:
    """Number of parameters, without the modules named `classifier` unless `classifiers`."""
    return sum(p.numel() for name, p in model.named_parameters() if classifiers or "classifier" not in name.split("."))


@torch.no_grad()
def count_macs(model: nn.Module, images: torch.Tensor) -> float:
    """Multiply-accumulates per image of an eval-mode forward on `images` (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / images.shape[0]


def model_costs(
    model_params: ModelParams,
    input_size: tuple[int, int],
    layers: Iterable[int] = (3, 5, 7),
    kernels: Iterable[int] = (1, 3, 5),
    variants: Sequence[str] = VARIANTS,
    batch: int = 4,
    seed: int = 0,
) -> list[ModelCost]:
    """Cost of every variant; `fixed_fe` and `sanet` at every (layers, kernel) pair.

    Args:
        model_params: a `ModelParams` (backbone, widths); weights are never loaded (`pretrained` is ignored).
        input_size: (height, width) of the input images.
    """
    torch.manual_seed(seed)
    backbone = build_backbone(model_params.backbone, "none")
    images = torch.randn(batch, 3, *input_size)
    rows = []
    for variant in variants:
        settings: Iterable[tuple[int | None, int | None]] = (
            itertools.product(layers, kernels) if variant in ("fixed_fe", "sanet") else [(None, None)]
        )
        for n_layers, kernel in settings:
            afe = model_params.afe
            if n_layers is not None:
                afe = afe.model_copy(update={"layers": n_layers, "kernel": kernel})
            model = SANet(backbone, variant, 1, afe, model_params.mfe)
            afe_params = count_parameters(model.afe) if model.afe is not None else 0
            rows.append(
                ModelCost(variant, n_layers, kernel, count_parameters(model), afe_params, count_macs(model, images))
            )
    return rows


def format_costs(rows: Sequence[ModelCost]) -> str:
    """The rows as an aligned text table (parameters in millions, MACs in G per image)."""
    lines = [f"{'variant':<9} {'layers':>6} {'kernel':>6} {'params (M)':>10} {'AFE (M)':>8} {'GMACs':>7}"]
    for r in rows:
        layers = "-" if r.layers is None else str(r.layers)
        kernel = "-" if r.kernel is None else f"{r.kernel}x{r.kernel}"
        lines.append(
            f"{r.variant:<9} {layers:>6} {kernel:>6} {r.params / 1e6:>10.2f} {r.afe_params / 1e6:>8.2f} "
            f"{r.macs / 1e9:>7.2f}"
        )
    return "\n".join(lines)
