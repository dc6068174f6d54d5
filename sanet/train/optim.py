"""Optimiser, learning-rate schedule and Gumbel-softmax temperature schedule (paper section 4.2 and our choices).

The paper gives SGD with learning rate 0.01 (batch 64, 150 epochs) and nothing else; the warm-up, the decay and the
learning-rate factors are parameters (`train` in params.yaml; docs/training.md). Schedules are pure functions of the
training progress measured in epochs (`epoch + step / steps_in_epoch`), updated every step: resuming at any step
gives exactly the learning rate and temperature an uninterrupted run would have had there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from sanet.config import TemperatureSchedule, TrainParams

__all__ = ["LRSchedule", "TemperatureScheduler", "build_optimizer", "parameter_groups"]

PRETRAINED_PREFIXES = ("trunk.",)
"""Parameter names initialised from the backbone's weights: the trunk, and every branch's layer4 copy (below)."""


def _is_pretrained(name: str) -> bool:
    return name.startswith(PRETRAINED_PREFIXES) or (name.startswith("branches.") and ".layer4." in name)


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters split into `pretrained` (backbone-initialised) and `new` (layers SANet adds)."""
    groups: dict[str, list[nn.Parameter]] = {"pretrained": [], "new": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups["pretrained" if _is_pretrained(name) else "new"].append(param)
    return groups


def build_optimizer(model: nn.Module, train: TrainParams) -> torch.optim.Optimizer:
    """SGD (the paper's) or Adam (`train.optimizer`; BoT's, beta1 = `train.momentum`) over the two parameter groups,
    each with its learning-rate factor (`train.lr_factors`)."""
    factors = train.lr_factors.model_dump()
    groups = [
        {"params": params, "name": name, "lr_factor": factors[name], "lr": train.lr * factors[name]}
        for name, params in parameter_groups(model).items()
        if params
    ]
    if train.optimizer == "adam":
        return torch.optim.Adam(groups, lr=train.lr, betas=(train.momentum, 0.999), weight_decay=train.weight_decay)
    return torch.optim.SGD(
        groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay, nesterov=train.nesterov
    )


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up from `warmup_factor` x lr, then step decay (x gamma at each milestone) or cosine decay."""

    base_lr: float
    epochs: int
    scheduler: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr_factor: float = 0.01
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.1

    @classmethod
    def from_params(cls, train: TrainParams) -> LRSchedule:
        return cls(
            base_lr=train.lr,
            epochs=train.epochs,
            scheduler=train.scheduler,
            milestones=tuple(train.milestones),
            gamma=train.gamma,
            min_lr_factor=train.min_lr_factor,
            warmup_epochs=train.warmup_epochs,
            warmup_factor=train.warmup_factor,
        )

    def factor(self, progress: float) -> float:
        """The multiplier of `base_lr` at `progress` epochs into training (0 <= progress <= epochs)."""
        if progress < self.warmup_epochs:
            return self.warmup_factor + (1 - self.warmup_factor) * progress / self.warmup_epochs
        if self.scheduler == "step":
            return self.gamma ** sum(progress >= m for m in self.milestones)
        span = max(self.epochs - self.warmup_epochs, 1e-12)
        t = min(max((progress - self.warmup_epochs) / span, 0.0), 1.0)
        return self.min_lr_factor + (1 - self.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))

    def lr(self, progress: float) -> float:
        return self.base_lr * self.factor(progress)

    def apply(self, optimizer: torch.optim.Optimizer, progress: float) -> float:
        """Set every group's learning rate for `progress`; returns the base learning rate."""
        lr = self.lr(progress)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_factor", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings (it has no other state): stored in checkpoints and compared on resume."""
        state = asdict(self)
        state["milestones"] = list(self.milestones)
        return state


@dataclass(frozen=True)
class TemperatureScheduler:
    """Gumbel-softmax temperature from `start` (model.afe.temperature) to `final` over training."""

    start: float
    final: float
    epochs: int
    schedule: str = "constant"

    @classmethod
    def from_params(cls, start: float, schedule: TemperatureSchedule, epochs: int) -> TemperatureScheduler:
        return cls(start=start, final=schedule.final, epochs=epochs, schedule=schedule.schedule)

    def __call__(self, progress: float) -> float:
        if self.schedule == "constant":
            return self.start
        t = min(max(progress / self.epochs, 0.0), 1.0)
        if self.schedule == "linear":
            return self.start + (self.final - self.start) * t
        return self.start * (self.final / self.start) ** t
