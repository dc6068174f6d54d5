"""`sanet train`: SANet training, the same alone on a laptop CPU or under `torchrun` on a multi-GPU pod.

    result = train(params)        # params from sanet.config.load_params; see TrainResult

What a run does, in order:

1. Pre-flight, before any data is read: the MLflow tracking store answers (rank 0), the training split and its part
   masks exist, the model and its weights build.
2. Resume: `<train.out_dir>/checkpoints/last.pt`, if present and written under the same training parameters, restores
   the model, optimiser, schedules, sampler position and random-number generators; training continues at the exact
   step it stopped at (README, Training, for the guarantee and its limits).
3. Validation of the untrained network on `data.train`'s query/gallery (`train.eval_untrained`): the baseline the
   trained network is compared with.
4. Epochs of identity-balanced P x K batches (`sanet.data.sampler`), augmented with their part masks
   (`sanet.data.transforms`), SGD with warm-up and decay (`sanet.train.optim`), AMP and channels-last on CUDA.
   A checkpoint is written atomically after every epoch; SIGTERM (a preempted pod) finishes the current step, writes
   a checkpoint and stops the run (`TrainResult.interrupted`).
5. Final validation, `model.pt` (weights and parameters), `history.csv` and `metrics.json` in the output folder, and in
   MLflow: flat params, per-step losses, learning rate and images/s, system metrics, tags, the final checkpoint and
   the model as a pyfunc (images -> features, visibility).

The three output files (the `train` stage's DVC outputs) are a deterministic function of the code, the parameters and
the data: with the same `train.threads` (`sanet.train.determinism`) two runs write the same bytes. What differs from
run to run (the MLflow run id, the pipeline run, the git sha, the measured speed and durations) goes to MLflow and to
the git-ignored sidecar `<out_dir>/provenance.json` (`sanet.infra.provenance`), never into those files.

Only rank 0 writes files and talks to MLflow; all ranks compute.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sanet.config import Params
from sanet.contracts.files import CHECKPOINT_FILE, HISTORY_FILE, MODEL_FILE, TRAIN_METRICS_FILE, TRAIN_PROVENANCE_FILE
from sanet.data.benchmarks import build_benchmark
from sanet.data.dataset import TrainDataset
from sanet.data.holdout import holdout_split
from sanet.data.sampler import IdentityBatchSampler
from sanet.data.transforms import TrainTransform
from sanet.infra.atomic import atomic_write
from sanet.masks.mask_files import MaskStore
from sanet.model import build_model
from sanet.train.checkpoint import (
    STATE_FORMAT,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    save_model_file,
    training_differences,
    training_fingerprint,
    training_tree,
    unwrap,
)
from sanet.train.cpu_kernels import describe_cpu_kernels
from sanet.train.determinism import threads_during
from sanet.train.distributed import DistContext, init_distributed, shutdown_distributed
from sanet.train.errors import CheckpointError, TrainingError
from sanet.train.features import EvaluationResult, autocast_dtype
from sanet.train.losses import build_criterion
from sanet.train.optim import LRSchedule, TemperatureScheduler, build_optimizer
from sanet.train.step import TrainStep
from sanet.train.validation import describe_held_out, evaluate_validation

__all__ = ["TrainHooks", "TrainResult", "TrainingError", "train"]

EXIT_PREEMPTED = 143  # 128 + SIGTERM: the run stopped early on purpose and can be resumed


@dataclass(frozen=True)
class TrainHooks:
    """How a caller that runs many trainings (an Optuna trial) steers one: its MLflow run and its validations.

    `on_validation(epoch, metrics)` is called on rank 0 after every validation during training (`train.eval_every`)
    and after the final one, with the metrics as fractions (`rank1`, `mAP`, ...); it may raise to stop the training
    (Optuna's pruning does), which then propagates out of `train` and ends the MLflow run. It is for
    single-process trainings: under torchrun the other ranks would wait for rank 0 forever.
    """

    run_name: str | None = None  # instead of `train <model> <backbone> (<profile>)`
    tags: Mapping[str, str] = field(default_factory=dict)  # extra run tags (`stage` wins; `mlflow.parentRunId` nests)
    on_validation: Callable[[int, Mapping[str, float]], None] | None = None
    log_checkpoint: bool = True  # log the final checkpoint as an artifact (a trial's is thrown away)


@dataclass
class TrainResult:
    """What a `train` call did. `interrupted`: stopped early (SIGTERM or `stop_after_steps`); rerun to resume."""

    out_dir: Path
    epochs: int
    epoch: int  # completed epochs
    global_step: int
    interrupted: bool
    resumed_from: str | None
    images_per_second: float
    seconds: float
    model_file: Path | None = None
    untrained: dict[str, float] | None = None
    final: dict[str, float] | None = None
    run_id: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self, benchmark: str) -> str:
        """One line for the end of a run."""
        if self.interrupted:
            return (
                f"stopped at epoch {self.epoch + 1}, step {self.global_step} (checkpoint "
                f"{self.out_dir / CHECKPOINT_FILE}); run `sanet train` again to resume"
            )
        parts = [f"trained {self.epochs} epochs, {self.global_step} steps, {self.images_per_second:.1f} img/s"]
        if self.final:
            line = f"{benchmark} Rank-1 {100 * self.final['rank1']:.1f}%, mAP {100 * self.final['mAP']:.1f}%"
            if self.untrained:
                line += (
                    f" (untrained: Rank-1 {100 * self.untrained['rank1']:.1f}%, mAP {100 * self.untrained['mAP']:.1f}%)"
                )
            parts.append(line)
        if self.model_file is not None:
            parts.append(f"model {self.model_file}")
        return "; ".join(parts)


class _StopOnSignal:
    """Turns SIGTERM into a request to stop after the current step (main thread only; restored on exit)."""

    def __init__(self) -> None:
        self.requested = False
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


def _configure_determinism(params: Params, device: torch.device) -> int:
    """Fix the algorithms (`train.deterministic`); returns the intra-op threads in use (`train.threads`, set by
    `train`)."""
    threads = torch.get_num_threads()
    if params.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        if device.type == "cuda":
            import os

            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return threads


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream (Gumbel noise) after the shared model initialisation."""
    return int(np.random.SeedSequence([seed, rank, 0x5A4E]).generate_state(1, dtype=np.uint64)[0] % 2**63)


class _Meter:
    """Running means of the loss terms over a window of steps."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, terms: dict[str, float]) -> None:
        for key, value in terms.items():
            self.sums[key] += value
        self.count += 1

    def means(self) -> dict[str, float]:
        return {key: value / max(self.count, 1) for key, value in self.sums.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> _Meter:
        meter = cls()
        if state:
            meter.sums.update(state["sums"])
            meter.count = state["count"]
        return meter


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def _history_csv(rows: list[dict[str, float]]) -> str:
    keys: list[str] = []
    for row in rows:  # a measured speed (a checkpoint of an older version has one) is no column: a DVC output
        keys += [k for k in row if k not in keys and k != "images_per_second"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class _Tracker:
    """MLflow on rank 0, nothing elsewhere: the trainer calls it unconditionally."""

    def __init__(self, ctx: DistContext, params: Params, hooks: TrainHooks) -> None:
        self.active = ctx.is_main
        self.params = params
        self.hooks = hooks
        self.run_id: str | None = None
        self._logger: Any = None
        self._stack = contextlib.ExitStack()

    def preflight(self) -> None:
        if not self.active:
            return
        from sanet.infra.tracking import check_tracking_uri, tracking_uri

        check_tracking_uri(tracking_uri(self.params))

    def start(self, data_md5: str, run_name: str, resume_run_id: str | None, extra_tags: dict[str, str]) -> None:
        if not self.active:
            return
        from mlflow.exceptions import MlflowException

        from sanet.infra.tracking import MetricLogger, run_tags, start_run

        stage = self.hooks.tags.get("stage", "train")  # a trial's run says stage=hpo_trial
        tags = run_tags(self.params, data_md5, stage=stage, extra={**extra_tags, **self.hooks.tags})
        run_name = self.hooks.run_name or run_name
        try:  # a resumed training continues its MLflow run...
            run = self._stack.enter_context(
                start_run(self.params, stage=stage, run_name=run_name, tags=tags, run_id=resume_run_id)
            )
        except MlflowException:  # ...unless this tracking store does not have it
            if resume_run_id is None:
                raise
            tags["resumed_from_run"] = resume_run_id
            run = self._stack.enter_context(start_run(self.params, stage=stage, run_name=run_name, tags=tags))
        self.run_id = run.info.run_id
        self._logger = MetricLogger()

    def tag(self, tags: dict[str, str]) -> None:
        if self._logger is not None:
            import mlflow

            mlflow.set_tags(tags)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._logger is not None:
            self._logger.log({k: v for k, v in metrics.items() if math.isfinite(v)}, step)

    def interrupted(self, step: int) -> None:
        """Close the run as KILLED (a preempted run); the resumed training reopens it."""
        if self._logger is None:
            return
        import mlflow

        self._logger.flush()
        mlflow.set_tag("interrupted_at_step", str(step))
        mlflow.end_run("KILLED")

    def finish(self, checkpoint: Path | None, model_file: Path | None, files: list[Path]) -> None:
        if self._logger is None:
            return
        import mlflow

        from sanet.serving import log_feature_model

        self._logger.flush()
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="train")
        if checkpoint is not None and self.hooks.log_checkpoint:
            mlflow.log_artifact(str(checkpoint), artifact_path="checkpoints")
        if model_file is not None and self.params.tracking.log_model:
            log_feature_model(model_file, self.params)

    def __enter__(self) -> _Tracker:
        self._stack.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        if self._logger is not None:
            with contextlib.suppress(Exception):
                self._logger.close()
        return self._stack.__exit__(*exc)


def train(
    params: Params,
    out_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    stop_after_steps: int | None = None,
    restart_stale: bool = False,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Train the model `params` describe on `data.train` (see the module docstring for the whole sequence).

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
    ctx = init_distributed(device)
    try:
        # train.threads applies to this call: a caller's own count comes back after it
        with threads_during(params.train.threads), _StopOnSignal() as stop:
            trainer = _Trainer(params, ctx, Path(out_dir or params.train.out_dir), progress and ctx.is_main)
            trainer.restart_stale = restart_stale
            trainer.hooks = hooks or TrainHooks()
            return trainer.run(resume, stop, stop_after_steps)
    finally:
        shutdown_distributed()


class _Trainer:
    def __init__(self, params: Params, ctx: DistContext, out_dir: Path, progress: bool) -> None:
        self.params, self.ctx, self.out_dir, self.progress = params, ctx, out_dir, progress
        self.train_params = params.train
        self.checkpoint_path = out_dir / CHECKPOINT_FILE
        self.restart_stale = False
        self.hooks = TrainHooks()

    # ---- set-up ------------------------------------------------------------------------------------------------

    def _build_data(self) -> None:
        params, ctx = self.params, self.ctx
        self.benchmark: Any = build_benchmark(params.data.train, params.data.root)
        if self.train_params.val_ids:  # validate on held-out training identities, not on the benchmark's test split
            try:
                self.benchmark = holdout_split(self.benchmark, self.train_params.val_ids, params.seed)
            except ValueError as exc:
                raise TrainingError(f"train.val_ids: {exc}") from None
        records = self.benchmark.train
        if not records:
            raise TrainingError(f"{params.data.train} has no training split: pick a training benchmark in data.train")
        masks = MaskStore(params.masks.out_dir, params.data.root)
        transform = TrainTransform((params.input.height, params.input.width), params.augment)
        self.dataset = TrainDataset(records, masks, transform, seed=params.seed)
        try:
            self.sampler = IdentityBatchSampler(
                [r.pid for r in records],
                self.train_params.batch_size,
                self.train_params.instances_per_id,
                seed=params.seed,
                rank=ctx.rank,
                world_size=ctx.world_size,
            )
        except ValueError as exc:  # batch settings that do not fit the split or the number of processes
            raise TrainingError(f"train.batch_size / train.instances_per_id: {exc}") from None
        workers = params.data.workers
        self.loader = DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=ctx.device.type == "cuda",
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(params.seed),  # never draws from the global RNG
        )
        self.num_classes = self.benchmark.num_train_pids
        self.train_paths = [r.path for r in records]

    def _build_model(self) -> None:
        params, ctx, train = self.params, self.ctx, self.train_params
        _seed_all(params.seed)  # the same initial weights on every rank and in every rerun
        model = build_model(params, self.num_classes).to(ctx.device)
        if ctx.device.type == "cuda" and train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if train.sync_bn and ctx.distributed and ctx.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif train.sync_bn and ctx.is_main:
            print("sanet train: train.sync_bn applies to several CUDA processes only; ignored here")
        self.model = model
        self.criterion = build_criterion(params)
        self.optimizer = build_optimizer(model, train)
        self.schedule = LRSchedule.from_params(train)
        self.temperature = (
            TemperatureScheduler.from_params(params.model.afe.temperature, train.temperature, train.epochs)
            if model.temperature is not None
            else None
        )
        self.amp_dtype = autocast_dtype(train.amp, ctx.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _wrap(self) -> torch.nn.Module:
        model: torch.nn.Module = self.model
        if self.ctx.distributed:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        if self.train_params.compile:
            model = torch.compile(model)
        return model

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.is_file():
            return None
        state = load_checkpoint(self.checkpoint_path, map_location="cpu", expect=STATE_FORMAT)
        if self.restart_stale:
            stale = None
            if state["fingerprint"] != training_fingerprint(self.params):
                stale = "it was written with other training parameters"
            elif state["epoch"] >= self.train_params.epochs:
                stale = "its training had finished"
            if stale is not None:
                if self.ctx.is_main:
                    print(f"sanet train: starting over: {stale} ({self.checkpoint_path} will be replaced)")
                return None
        if state["fingerprint"] != training_fingerprint(self.params):
            changes = "\n  ".join(training_differences(self.params, state["training_params"])) or "(unknown)"
            raise CheckpointError(
                f"{self.checkpoint_path} was written with other training parameters:\n  {changes}\n"
                "restore them to resume, or start over with `sanet train --fresh` (the checkpoint is then replaced)"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the factors come from params, not the file
            group["lr_factor"] = getattr(self.train_params.lr_factors, group["name"])
        if state["schedule"] != self.schedule.state_dict():
            raise CheckpointError(f"{self.checkpoint_path}: the learning-rate schedule differs from train.*")
        self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) == self.ctx.world_size:
            restore_rng(rngs[self.ctx.rank])
        else:  # another number of processes: the run goes on, but the random streams are new
            torch.manual_seed(_rank_seed(self.params.seed + state["global_step"], self.ctx.rank))
            if self.ctx.is_main:
                print(
                    f"sanet train: the checkpoint was written by {len(rngs)} processes, this run has "
                    f"{self.ctx.world_size}: resuming with fresh random streams (not bit-identical)"
                )
        return state

    def _save(self, epoch: int, step: int) -> None:
        rngs = self.ctx.all_gather_object(capture_rng())
        if not self.ctx.is_main:
            return
        state = {
            "format": STATE_FORMAT,
            "fingerprint": training_fingerprint(self.params),
            "training_params": training_tree(self.params),
            "epoch": epoch,
            "step": step,
            "global_step": self.global_step,
            "world_size": self.ctx.world_size,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict() | {"epoch": epoch, "start_step": step},
            "rng": rngs,
            "history": self.history,
            "untrained": self.untrained,
            "epoch_meter": self.current_meter.state_dict() if step else None,
            "run_id": self.tracker.run_id,
            "pipeline_run": self.pipeline_run,
            "images_seen": self.images_seen,
            "train_seconds": self.train_seconds,
        }
        save_checkpoint(self.checkpoint_path, state)

    # ---- validation --------------------------------------------------------------------------------------------

    def _validate(self, tag: str) -> dict[str, float] | None:
        """Rank 0 evaluates on data.train's query/gallery (or the held-out identities) while the others wait."""
        result: EvaluationResult | None = None
        if self.ctx.is_main:
            # held-out identities (train.val_ids) also get partial queries and the validation score (engine.validation)
            model, device = unwrap(self.model), self.ctx.device
            result = evaluate_validation(model, self.benchmark, self.params, device, self.progress)
        self.ctx.barrier()
        if result is None:
            return None
        metrics = dict(result.metrics)
        self.tracker.log({f"{tag}/{k}": v for k, v in metrics.items()}, self.global_step)
        if self.progress or self.ctx.is_main:
            tqdm.write(
                f"{tag}: {self.benchmark.name} Rank-1 {100 * metrics['rank1']:.1f}%, mAP {100 * metrics['mAP']:.1f}%, "
                f"mINP {100 * metrics['mINP']:.1f}% ({result.num_query} queries, {result.num_gallery} gallery)"
                + describe_held_out(result)
            )
        if self.hooks.on_validation is not None and tag in ("val", "final"):  # after the line: a pruned trial shows it
            self.hooks.on_validation(self.epoch_done, metrics)
        return metrics

    # ---- the loop ----------------------------------------------------------------------------------------------

    def run(self, resume: bool, stop: _StopOnSignal, stop_after_steps: int | None) -> TrainResult:
        params, ctx, train = self.params, self.ctx, self.train_params
        started = time.perf_counter()
        self.tracker = _Tracker(ctx, params, self.hooks)
        self.tracker.preflight()  # an unreachable tracking store stops the run before any data is read
        self.threads = _configure_determinism(params, ctx.device)
        self._build_data()
        self._build_model()
        self.history: list[dict[str, float]] = []
        self.untrained: dict[str, float] | None = None
        self.images_seen, self.train_seconds, self.global_step = 0, 0.0, 0
        start_epoch, start_step, resume_run_id = 0, 0, None
        from sanet.infra.tracking import pipeline_run_id

        self.pipeline_run = pipeline_run_id()  # groups this training with the stages that use its model
        self.epoch_meter: dict[str, Any] | None = None
        self.current_meter = _Meter()
        state = self._load() if resume else None
        if state is not None:
            start_epoch, start_step = state["epoch"], state["step"]
            self.global_step, self.history, self.untrained = state["global_step"], state["history"], state["untrained"]
            self.images_seen, self.train_seconds = state["images_seen"], state["train_seconds"]
            resume_run_id = state["run_id"]
            self.pipeline_run = state.get("pipeline_run") or self.pipeline_run
            self.epoch_meter = state["epoch_meter"]
            if ctx.is_main:
                where = f"epoch {start_epoch + 1}, step {start_step}"
                print(f"sanet train: resuming from {self.checkpoint_path} at {where}")
        else:
            torch.manual_seed(_rank_seed(params.seed, ctx.rank))
        model = self._wrap()
        resumed_from = str(self.checkpoint_path) if state is not None else None

        with self.tracker:
            from sanet.infra.hashing import files_md5
            from sanet.infra.tracking import model_label

            data_md5 = ""
            if ctx.is_main:
                data_md5 = files_md5(self.train_paths, params.data.root)
            self.data_md5 = data_md5
            self.tracker.start(
                data_md5,
                run_name=f"train {model_label(params)} {params.model.backbone} ({params.profile})",
                resume_run_id=resume_run_id,
                extra_tags={
                    "world_size": str(ctx.world_size),
                    "device": ctx.device.type,
                    "threads": str(self.threads),
                    "cpu_kernels": describe_cpu_kernels(),
                    "pipeline_run": self.pipeline_run,
                },
            )
            if self.untrained is None and train.eval_untrained and start_epoch == 0 and start_step == 0:
                self.untrained = self._validate("untrained")
            interrupted = self._epochs(model, start_epoch, start_step, stop, stop_after_steps)
            result = TrainResult(
                out_dir=self.out_dir,
                epochs=train.epochs,
                epoch=self.epoch_done,
                global_step=self.global_step,
                interrupted=interrupted,
                resumed_from=resumed_from,
                images_per_second=self.images_seen / self.train_seconds if self.train_seconds else float("nan"),
                seconds=time.perf_counter() - started,
                untrained=self.untrained,
                run_id=self.tracker.run_id,
                history=self.history,
            )
            if interrupted:
                self.tracker.interrupted(self.global_step)
            else:
                self._finish(result)
        return result

    def _epochs(
        self, model: torch.nn.Module, start_epoch: int, start_step: int, stop: _StopOnSignal, limit: int | None
    ) -> bool:
        """Train from (start_epoch, start_step) to the end; returns True when stopped early."""
        train, ctx = self.train_params, self.ctx
        channels_last = ctx.device.type == "cuda" and train.channels_last
        step_fn = TrainStep(
            model, self.criterion, self.optimizer, ctx.device, self.amp_dtype, channels_last, scaler=self.scaler
        )
        steps_this_call = 0
        self.epoch_done = start_epoch
        for epoch in range(start_epoch, train.epochs):
            self.sampler.set_epoch(epoch, start_step=start_step if epoch == start_epoch else 0)
            steps_in_epoch = self.sampler.steps_in_epoch
            first = steps_in_epoch - len(self.sampler)
            # a resumed epoch's means also cover the steps run before the interruption
            meter = _Meter.from_state(self.epoch_meter if epoch == start_epoch else None)
            window = _Meter()
            self.current_meter = meter
            epoch_images, epoch_start = 0, time.perf_counter()
            window_images, window_start = 0, time.perf_counter()
            bar = tqdm(
                total=steps_in_epoch,
                initial=first,
                desc=f"epoch {epoch + 1}/{train.epochs}",
                unit="step",
                disable=not self.progress,
                dynamic_ncols=True,
            )
            model.train()
            stopped = False
            lr = self.schedule.lr(epoch + first / steps_in_epoch)  # the values of an epoch resumed at its very end
            temperature = self.temperature(epoch + first / steps_in_epoch) if self.temperature is not None else None
            for step, batch in enumerate(self.loader, start=first):
                progress = epoch + step / steps_in_epoch
                lr = self.schedule.apply(self.optimizer, progress)
                temperature = self.temperature(progress) if self.temperature is not None else None
                if temperature is not None:
                    self.model.set_temperature(temperature)
                try:
                    terms = step_fn(batch)
                except TrainingError as exc:
                    raise TrainingError(
                        f"step {self.global_step + 1}: {exc}; the last checkpoint ({self.checkpoint_path}) is intact"
                    ) from None
                self.global_step += 1
                steps_this_call += 1
                batch_images = len(batch["pids"]) * ctx.world_size
                epoch_images += batch_images
                window_images += batch_images
                meter.add(terms)
                window.add(terms)
                if self.global_step % train.log_every == 0:
                    elapsed = time.perf_counter() - window_start
                    speed = window_images / elapsed if elapsed > 0 else float("nan")
                    logged = dict(zip(window.means(), ctx.mean(list(window.means().values())), strict=True))
                    metrics = {f"train/{k}": v for k, v in logged.items()}
                    metrics |= {"train/lr": lr, "train/images_per_second": speed, "train/epoch": progress}
                    if temperature is not None:
                        metrics["train/temperature"] = temperature
                    self.tracker.log(metrics, self.global_step)
                    bar.set_postfix(loss=f"{logged['total']:.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                    window, window_images, window_start = _Meter(), 0, time.perf_counter()
                bar.update(1)
                stop_now = stop.requested or (limit is not None and steps_this_call >= limit)
                if self._agree(stop_now):
                    self.train_seconds += time.perf_counter() - epoch_start
                    self.images_seen += epoch_images
                    self._save(epoch, step + 1)
                    stopped = True
                    break
            bar.close()
            if stopped:
                return True
            seconds = time.perf_counter() - epoch_start
            self.train_seconds += seconds
            self.images_seen += epoch_images
            means = meter.means()
            row: dict[str, float] = {"epoch": epoch + 1, "step": self.global_step, "lr": lr, "loss": means["total"]}
            row |= {k: means[k] for k in ("id", "triplet", "focal")}
            epoch_speed = epoch_images / seconds if seconds > 0 else float("nan")  # MLflow only, not history.csv
            if temperature is not None:
                row["temperature"] = temperature
            self.epoch_done = epoch + 1
            last = epoch + 1 == train.epochs
            if not last and train.eval_every and (epoch + 1) % train.eval_every == 0:
                val = self._validate("val")
                if val:
                    row |= {"rank1": val["rank1"], "mAP": val["mAP"]}
            self.history.append(row)
            epoch_metrics = {f"epoch/{k}": float(v) for k, v in row.items() if k not in ("epoch", "step")}
            self.tracker.log(epoch_metrics | {"epoch/images_per_second": epoch_speed}, epoch + 1)
            self._save(epoch + 1, 0)
        return False

    def _agree(self, stop: bool) -> bool:
        """Whether any process wants to stop: all processes must leave the loop at the same step."""
        if not self.ctx.distributed:
            return stop
        return self.ctx.mean([float(stop)])[0] > 0

    # ---- outputs -----------------------------------------------------------------------------------------------

    def _finish(self, result: TrainResult) -> None:
        final = self._validate("final")
        result.final = final
        if self.history and final:
            self.history[-1] |= {"rank1": final["rank1"], "mAP": final["mAP"]}
        if not self.ctx.is_main:
            return
        model_file = save_model_file(
            self.out_dir / MODEL_FILE,
            self.model,
            self.params,
            self.num_classes,
            meta={  # what the weights are, never which run made them (provenance.json, MLflow)
                "benchmark": self.params.data.train,
                "epochs": self.train_params.epochs,
                "global_step": self.global_step,
                "final": final or {},
                "data_md5": self.data_md5,
            },
        )
        result.model_file = model_file
        summary = {
            "benchmark": self.params.data.train,
            "variant": self.params.model.variant,
            "epochs": self.train_params.epochs,
            "steps": self.global_step,
            "final": final,
            "untrained": self.untrained,
        }
        metrics_file = self.out_dir / TRAIN_METRICS_FILE
        _write_text(metrics_file, json.dumps(summary, indent=2) + "\n")
        history_file = self.out_dir / HISTORY_FILE
        _write_text(history_file, _history_csv(self.history))
        self.tracker.log(
            {"train/images_per_second_mean": result.images_per_second, "train/seconds": self.train_seconds},
            self.global_step,
        )
        provenance = self._write_provenance(result, model_file)
        self.tracker.finish(self.checkpoint_path, model_file, [metrics_file, history_file, provenance])

    def _write_provenance(self, result: TrainResult, model_file: Path) -> Path:
        """`<out_dir>/provenance.json` and the run's `model_md5` tag: the run-dependent facts of this training.

        `sanet evaluate` and `sanet register` find the training's MLflow run and pipeline run through them (the
        sidecar when it names this model file's md5, else the run tagged with it).
        """
        from sanet.infra.hashing import file_md5
        from sanet.infra.provenance import write_sidecar
        from sanet.infra.tracking import git_sha

        def measured(value: float, digits: int) -> float | None:
            return round(value, digits) if math.isfinite(value) else None

        md5 = file_md5(model_file)
        path = write_sidecar(
            self.out_dir / TRAIN_PROVENANCE_FILE,
            {
                "model_file": str(model_file),
                "model_md5": md5,
                "train_run_id": self.tracker.run_id,
                "pipeline_run": self.pipeline_run,
                "git_sha": git_sha(),
                "data_md5": self.data_md5,
                "device": self.ctx.device.type,
                "world_size": self.ctx.world_size,
                "threads": self.threads,
                "cpu_kernels": describe_cpu_kernels(),
                "resumed_from": result.resumed_from,
                "images_per_second": measured(result.images_per_second, 2),
                "train_seconds": measured(self.train_seconds, 1),
                "seconds": measured(result.seconds, 1),
            },
        )
        self.tracker.tag({"model_md5": md5})
        return path
