"""The training loop: SANet training, the same alone on a laptop CPU or under `torchrun` on a multi-GPU pod.

`sanet.train.stage.run_train` (what `sanet train` runs) builds a `Trainer` with its hooks and runs it. The
constructor builds everything a run needs (data, model, optimiser, the resume state of `sanet.train.resume`); `run`
only trains. MLflow is a hook (`sanet.train.mlflow_hook`), like fast-reid's: the loop reports to its hooks and knows
nothing of tracking.

What a run does, in order:

1. Pre-flight, before any data is read: the MLflow tracking store answers (rank 0), the training split and its part
   masks exist, the model and its weights build.
2. Resume: `<train.out_dir>/checkpoints/last.pt`, if present and written under the same training parameters, restores
   the model, optimiser, schedules, sampler position and random-number generators; training continues at the exact
   step it stopped at (docs/training.md, for the guarantee and its limits).
3. Validation of the untrained network on `data.train`'s query/gallery (`train.eval_untrained`): the baseline the
   trained network is compared with.
4. Epochs of identity-balanced P x K batches (`sanet.data.sampler`), augmented with their part masks
   (`sanet.data.transforms`), SGD with warm-up and decay (`sanet.train.optim`), AMP and channels-last on CUDA.
   A checkpoint is written atomically after every epoch; SIGTERM (a preempted pod) finishes the current step, writes
   a checkpoint and stops the run (`TrainResult.interrupted`).
5. Final validation, `model.pt` (weights and parameters), `history.csv` and `metrics.json` in the output folder; the
   MLflow hook records flat params, per-step losses, learning rate and images/s, system metrics, tags, the final
   checkpoint and the model as a pyfunc (images -> features, visibility).

The three output files (the `train` stage's DVC outputs) are a deterministic function of the code, the parameters and
the data: with the same `train.threads` (`sanet.engine.determinism`) two runs write the same bytes. What differs from
run to run (the MLflow run id, the pipeline run, the git sha, the measured speed and durations) goes to MLflow and to
the git-ignored sidecar `<out_dir>/provenance.json` (`sanet.infra.provenance`), never into those files.

Only rank 0 writes files and talks to MLflow; all ranks compute.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sanet.config import Params
from sanet.contracts.files import CHECKPOINT_FILE, HISTORY_FILE, MODEL_FILE, TRAIN_METRICS_FILE
from sanet.data.benchmarks import build_benchmark
from sanet.data.dataset import TrainDataset
from sanet.data.holdout import holdout_split
from sanet.data.sampler import IdentityBatchSampler
from sanet.data.transforms import TrainTransform
from sanet.engine.checkpoint import save_model_file, unwrap
from sanet.engine.features import EvaluationResult, autocast_dtype
from sanet.infra.atomic import atomic_write
from sanet.masks.mask_files import MaskStore
from sanet.model.sanet import build_model
from sanet.train.distributed import DistContext
from sanet.train.errors import TrainingError
from sanet.train.hooks import TrainHook
from sanet.train.losses import build_criterion
from sanet.train.optim import LRSchedule, TemperatureScheduler, build_optimizer
from sanet.train.resume import Meter, ResumeState, load_train_state, rank_seed, save_train_state
from sanet.train.step import TrainStep
from sanet.train.validation import describe_held_out, evaluate_validation

__all__ = ["StopRequest", "TrainResult", "Trainer", "epoch_line"]


@dataclass
class TrainResult:
    """What a training run did. `interrupted`: stopped early (SIGTERM or `stop_after_steps`); rerun to resume."""

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


class StopRequest:
    """Whether the run should stop after the current step (`sanet.train.stage` sets it on SIGTERM)."""

    def __init__(self) -> None:
        self.requested = False


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


def epoch_line(row: Mapping[str, float], epochs: int, speed: float, seconds: float, remaining: float) -> str:
    """One finished epoch, for a log without progress bars: `epoch 3/20: loss 2.345 (id 1.9, triplet 0.12, focal
    0.31), lr 1.00e-02, 45.2 img/s, 38 s; ETA 10 min 48 s`."""
    terms = ", ".join(f"{name} {row[name]:.3g}" for name in ("id", "triplet", "focal") if name in row)
    line = f"epoch {int(row['epoch'])}/{epochs}: loss {row['loss']:.4g} ({terms}), lr {row['lr']:.2e}, "
    line += f"{speed:.1f} img/s, {seconds:.0f} s"
    if "rank1" in row:
        line += f", val Rank-1 {100 * row['rank1']:.1f}%"
    minutes, rest = divmod(round(remaining), 60)
    return line + (f"; ETA {minutes} min {rest} s" if minutes else f"; ETA {rest} s")


class Trainer:
    """One training run, built in full by the constructor: data, model, optimiser, schedules and the resume state.

    Args:
        params: validated parameters.
        ctx: the process group (`sanet.train.distributed.init_distributed`).
        out_dir: checkpoints and outputs.
        progress: show tqdm bars (rank 0).
        hooks: called around the loop, in order (`sanet.train.hooks`).
        resume: continue from `<out_dir>/checkpoints/last.pt` when it exists.
        restart_stale: start over when that checkpoint is foreign or finished (`sanet.train.stage.run_train`).
    """

    def __init__(
        self,
        params: Params,
        ctx: DistContext,
        out_dir: Path,
        progress: bool,
        hooks: Sequence[TrainHook] = (),
        resume: bool = True,
        restart_stale: bool = False,
    ) -> None:
        from sanet.infra.hashing import files_md5
        from sanet.infra.tracking import pipeline_run_id

        self.params, self.ctx, self.out_dir, self.progress = params, ctx, out_dir, progress
        self.train_params = params.train
        self.hooks = list(hooks)
        self.checkpoint_path = out_dir / CHECKPOINT_FILE
        self.started = time.perf_counter()
        self.threads = _configure_determinism(params, ctx.device)
        self._build_data()
        self._build_model()
        loaded = None
        if resume:
            loaded = load_train_state(
                self.checkpoint_path,
                params,
                ctx,
                self.model,
                self.optimizer,
                self.schedule,
                self.scaler,
                restart_stale,
            )
        self.resume = loaded or ResumeState()
        self.state = self.resume  # the counters the loop advances (a fresh run starts from zeros)
        # groups this training with the stages that use its model
        self.pipeline_run: str = self.state.pipeline_run or pipeline_run_id()
        self.state.pipeline_run = self.pipeline_run
        if loaded is not None:
            if ctx.is_main:
                where = f"epoch {loaded.epoch + 1}, step {loaded.step}"
                print(f"sanet train: resuming from {self.checkpoint_path} at {where}")
        else:
            torch.manual_seed(rank_seed(params.seed, ctx.rank))
        self.wrapped = self._wrap()
        self.data_md5 = files_md5(self.train_paths, params.data.root) if ctx.is_main else ""
        self.run_id: str | None = None  # set by the MLflow hook
        self.epoch_done = self.state.epoch
        self.current_meter = Meter()

    @property
    def global_step(self) -> int:
        return self.state.global_step

    @property
    def train_seconds(self) -> float:
        return self.state.train_seconds

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
            model = cast(torch.nn.Module, torch.compile(model))  # a Module compiles to an OptimizedModule
        return model

    # ---- hooks -------------------------------------------------------------------------------------------------

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for hook in self.hooks:
            hook.log_metrics(metrics, step)

    def _save(self, epoch: int, step: int) -> None:
        save_train_state(
            self.checkpoint_path,
            self.params,
            self.ctx,
            self.model,
            self.optimizer,
            self.schedule,
            self.scaler,
            self.sampler,
            self.state,
            epoch,
            step,
            self.current_meter,
            self.run_id,
        )

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
        self._log({f"{tag}/{k}": v for k, v in metrics.items()}, self.global_step)
        if self.progress or self.ctx.is_main:
            tqdm.write(
                f"{tag}: {self.benchmark.name} Rank-1 {100 * metrics['rank1']:.1f}%, mAP {100 * metrics['mAP']:.1f}%, "
                f"mINP {100 * metrics['mINP']:.1f}% ({result.num_query} queries, {result.num_gallery} gallery)"
                + describe_held_out(result)
            )
        for hook in self.hooks:  # after the line: a pruned trial shows it
            hook.after_validation(self, tag, metrics)
        return metrics

    # ---- the loop ----------------------------------------------------------------------------------------------

    def run(self, stop: StopRequest, stop_after_steps: int | None = None) -> TrainResult:
        """Train to the end (or until `stop` is requested, or `stop_after_steps` steps of this call)."""
        try:
            result = self._run(stop, stop_after_steps)
        except BaseException as exc:
            for hook in self.hooks:
                hook.close(exc)
            raise
        for hook in self.hooks:
            hook.close(None)
        return result

    def _run(self, stop: StopRequest, stop_after_steps: int | None) -> TrainResult:
        train, state = self.train_params, self.state
        for hook in self.hooks:
            hook.before_train(self)
        start_epoch, start_step = state.epoch, state.step
        if state.untrained is None and train.eval_untrained and start_epoch == 0 and start_step == 0:
            state.untrained = self._validate("untrained")
        interrupted = self._epochs(self.wrapped, start_epoch, start_step, stop, stop_after_steps)
        result = TrainResult(
            out_dir=self.out_dir,
            epochs=train.epochs,
            epoch=self.epoch_done,
            global_step=state.global_step,
            interrupted=interrupted,
            resumed_from=str(state.resumed_from) if state.resumed_from is not None else None,
            images_per_second=state.images_seen / state.train_seconds if state.train_seconds else float("nan"),
            seconds=time.perf_counter() - self.started,
            untrained=state.untrained,
            run_id=self.run_id,
            history=state.history,
        )
        if interrupted:
            for hook in self.hooks:
                hook.after_interrupt(self)
        else:
            self._finish(result)
        return result

    def _epochs(
        self, model: torch.nn.Module, start_epoch: int, start_step: int, stop: StopRequest, limit: int | None
    ) -> bool:
        """Train from (start_epoch, start_step) to the end; returns True when stopped early."""
        train, ctx = self.train_params, self.ctx
        channels_last = ctx.device.type == "cuda" and train.channels_last
        step_fn = TrainStep(
            model, self.criterion, self.optimizer, ctx.device, self.amp_dtype, channels_last, scaler=self.scaler
        )
        steps_this_call = 0
        loop_start = time.perf_counter()  # for the ETA of the epoch lines
        self.epoch_done = start_epoch
        for epoch in range(start_epoch, train.epochs):
            self.sampler.set_epoch(epoch, start_step=start_step if epoch == start_epoch else 0)
            steps_in_epoch = self.sampler.steps_in_epoch
            first = steps_in_epoch - len(self.sampler)
            # a resumed epoch's means also cover the steps run before the interruption
            meter = Meter.from_state(self.state.epoch_meter if epoch == start_epoch else None)
            window = Meter()
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
                self.state.global_step += 1
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
                    self._log(metrics, self.global_step)
                    bar.set_postfix(loss=f"{logged['total']:.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                    window, window_images, window_start = Meter(), 0, time.perf_counter()
                bar.update(1)
                stop_now = stop.requested or (limit is not None and steps_this_call >= limit)
                if self._agree(stop_now):
                    self.state.train_seconds += time.perf_counter() - epoch_start
                    self.state.images_seen += epoch_images
                    self._save(epoch, step + 1)
                    stopped = True
                    break
            bar.close()
            if stopped:
                return True
            seconds = time.perf_counter() - epoch_start
            self.state.train_seconds += seconds
            self.state.images_seen += epoch_images
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
            self.state.history.append(row)
            if not self.progress and ctx.is_main:  # no bars (`--quiet`, a log file): one line per epoch instead
                per_epoch = (time.perf_counter() - loop_start) / (epoch - start_epoch + 1)
                remaining = per_epoch * (train.epochs - epoch - 1)
                print(epoch_line(row, train.epochs, epoch_speed, seconds, remaining), flush=True)
            epoch_metrics = {f"epoch/{k}": float(v) for k, v in row.items() if k not in ("epoch", "step")}
            self._log(epoch_metrics | {"epoch/images_per_second": epoch_speed}, epoch + 1)
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
        history = self.state.history
        if history and final:
            history[-1] |= {"rank1": final["rank1"], "mAP": final["mAP"]}
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
            "untrained": self.state.untrained,
        }
        metrics_file = self.out_dir / TRAIN_METRICS_FILE
        _write_text(metrics_file, json.dumps(summary, indent=2) + "\n")
        history_file = self.out_dir / HISTORY_FILE
        _write_text(history_file, _history_csv(history))
        for hook in self.hooks:
            hook.after_train(self, result, [metrics_file, history_file])
