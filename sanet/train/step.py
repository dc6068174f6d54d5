"""One optimisation step (forward under autocast, loss, backward, optimiser step): shared by training and its benchmark.

AMP follows `train.amp` (`sanet.engine.features.autocast_dtype`): bf16 or fp16 autocast on CUDA, with a gradient
scaler for fp16 only; channels-last input on CUDA. The loss itself is computed in float32 (`sanet.train.losses`). A loss
that is not finite stops training with `TrainingError` before the weights are touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from sanet.engine.features import autocast_context
from sanet.train.errors import TrainingError

__all__ = ["TrainStep"]


class TrainStep:
    """Callable: `step(batch) -> loss terms` for a batch dict with `images`, `mask_labels` and `pids`."""

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model, self.criterion, self.optimizer, self.device = model, criterion, optimizer, device
        self.amp_dtype = amp_dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # pass the scaler when its state is checkpointed; its own otherwise
        self.scaler = scaler or torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        images = batch["images"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        labels = batch["mask_labels"].to(self.device, non_blocking=True)
        pids = batch["pids"].to(self.device, non_blocking=True)
        with autocast_context(self.device, self.amp_dtype):
            out = self.model(images)
        loss, terms = self.criterion(out, pids, labels)
        if not math.isfinite(terms["total"]):
            raise TrainingError(
                f"the loss is {terms['total']}: training diverged (lower train.lr, or set train.amp to bf16 or off)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return terms
