"""`sanet train`, the DVC stage `train`: train SANet on `data.train`, resuming an interrupted run.

    result = run_train(params)        # params from sanet.config.load_params; see TrainResult

The stage sets up the process group (alone, or one process of `torchrun`), the thread count and the SIGTERM handler,
builds the trainer (`sanet.train.trainer`) with its hooks (the MLflow run, a caller's validation callback) and runs
it. It writes `outputs/train/` (`sanet.contracts.files`): `model.pt`, `metrics.json` and `history.csv` (the DVC
outputs) and `checkpoints/last.pt` (the resumable state, `sanet.train.resume`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanet.config import Params
from sanet.train.trainer import StopRequest, Trainer, TrainResult

__all__ = ["EXIT_PREEMPTED", "TrainHooks", "TrainResult", "run_train"]

EXIT_PREEMPTED = 143  # 128 + SIGTERM: the run stopped early on purpose and can be resumed


@dataclass(frozen=True)
class TrainHooks:
    """How a caller that runs many trainings (an Optuna trial) steers one: its MLflow run and its validations.

    `on_validation(epoch, metrics)` is called on rank 0 after every validation during training (`train.eval_every`)
    and after the final one, with the metrics as fractions (`rank1`, `mAP`, ...); it may raise to stop the training
    (Optuna's pruning does), which then propagates out of `run_train` and ends the MLflow run. It is for
    single-process trainings: under torchrun the other ranks would wait for rank 0 forever.
    """

    run_name: str | None = None  # instead of `train <model> <backbone> (<profile>)`
    tags: Mapping[str, str] = field(default_factory=dict)  # extra run tags (`stage` wins; `mlflow.parentRunId` nests)
    on_validation: Callable[[int, Mapping[str, float]], None] | None = None
    log_checkpoint: bool = True  # log the final checkpoint as an artifact (a trial's is thrown away)


class _StopOnSignal(StopRequest):
    """Turns SIGTERM into a request to stop after the current step (main thread only; restored on exit)."""

    def __init__(self) -> None:
        super().__init__()
        self._previous: Any = None

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def run_train(
    params: Params,
    out_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    stop_after_steps: int | None = None,
    restart_stale: bool = False,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Train the model `params` describe on `data.train` (see `sanet.train.trainer` for the whole sequence).

    Args:
        out_dir: checkpoints and outputs (default `train.out_dir`).
        device: `auto` (CUDA when available), `cpu` or `cuda`.
        resume: continue from `<out_dir>/checkpoints/last.pt` when it exists (False: start over and overwrite it).
        progress: show tqdm bars (rank 0).
        stop_after_steps: stop after this many steps of this call, checkpointing as on SIGTERM (tests, smoke runs).
        restart_stale: start over, instead of refusing, when the checkpoint was written with other training
            parameters, and also when its training had finished. The DVC stage runs with it: DVC re-runs `train`
            only when a dependency changed, so an unfinished checkpoint is an interrupted run to resume, and a
            finished or foreign one would only replay an old result.
        hooks: run name, extra tags and a per-validation callback for callers such as Optuna trials (`TrainHooks`).

    Raises:
        TrainingError, CheckpointError, TrackingError and the data/model errors (BenchmarkError, MasksError,
        WeightsError): all before the first step, except a diverging loss.
    """
    from sanet.engine.determinism import threads_during
    from sanet.train.distributed import init_distributed, shutdown_distributed
    from sanet.train.hooks import TrainHook, ValidationCallback
    from sanet.train.mlflow_hook import MLflowHook

    settings = hooks or TrainHooks()
    ctx = init_distributed(device)
    try:
        # train.threads applies to this call: a caller's own count comes back after it
        with threads_during(params.train.threads), _StopOnSignal() as stop:
            # the tracking store is checked here, before any data is read
            tracker = MLflowHook(params, ctx.is_main, settings.run_name, settings.tags, settings.log_checkpoint)
            run_hooks: list[TrainHook] = [tracker]
            if settings.on_validation is not None:
                run_hooks.append(ValidationCallback(settings.on_validation))
            out = Path(out_dir or params.train.out_dir)
            trainer = Trainer(
                params, ctx, out, progress and ctx.is_main, run_hooks, resume=resume, restart_stale=restart_stale
            )
            return trainer.run(stop, stop_after_steps)
    finally:
        shutdown_distributed()
