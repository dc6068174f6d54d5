"""The trainer's hooks (fast-reid's `HookBase`): what runs around the training loop without living in it.

`Trainer` calls every hook at fixed points, in order; a hook sees the trainer and does nothing by default:

- `before_train(trainer)`: once, after the model, data and resume state are built, before the first step;
- `log_metrics(metrics, step)`: the loop's step, epoch and validation numbers, as they come;
- `after_validation(trainer, tag, metrics)`: after each validation (`untrained`, `val`, `final`) on rank 0;
- `after_interrupt(trainer)`: the run stopped early (SIGTERM, `stop_after_steps`) and wrote its checkpoint;
- `after_train(trainer, result, files)`: the outputs are written (`files`: the training's output files);
- `close(error)`: always, last (`error`: the exception the run stops with, or None).

`MLflowHook` (`sanet.train.mlflow_hook`) records the run; `ValidationCallback` hands validations to a caller (an
Optuna trial prunes from it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sanet.train.trainer import Trainer

__all__ = ["TrainHook", "ValidationCallback"]


class TrainHook:
    """A hook that does nothing: subclasses override the points they need."""

    def before_train(self, trainer: Trainer) -> None:
        """Once, before the untrained validation and the first step."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Numbers the loop measured at `step` (global step, or epoch for `epoch/*`)."""

    def after_validation(self, trainer: Trainer, tag: str, metrics: Mapping[str, float]) -> None:
        """After a validation on rank 0 (`tag`: untrained, val or final); may raise to stop the training."""

    def after_interrupt(self, trainer: Trainer) -> None:
        """The run stopped early; its checkpoint is written."""

    def after_train(self, trainer: Trainer, result: Any, files: list[Path]) -> None:
        """The run finished; `files` are its outputs (model, metrics, history)."""

    def close(self, error: BaseException | None = None) -> None:
        """Last, whatever happened (`error`: the exception the run stops with, re-raised after the hooks)."""


class ValidationCallback(TrainHook):
    """Calls `callback(epoch, metrics)` after the `val` and `final` validations (Optuna's pruning raises from it)."""

    def __init__(self, callback: Callable[[int, Mapping[str, float]], None]) -> None:
        self.callback = callback

    def after_validation(self, trainer: Trainer, tag: str, metrics: Mapping[str, float]) -> None:
        if tag in ("val", "final"):
            self.callback(trainer.epoch_done, metrics)
