"""The training's MLflow run, as a trainer hook: opened before the first step, fed the loop's numbers, closed with
the outputs, the checkpoint and the servable model as artifacts.

Only rank 0 records (`active`); on the other ranks every call is a no-op. Constructing the hook checks the tracking
store, so an unreachable store stops the run before any data is read. A resumed training continues its MLflow run
(the checkpoint names it) unless this store does not have it (then a new run, tagged `resumed_from_run`).

The run-dependent facts of a training (its run id, pipeline run, git sha, speed) are written here too, to the
git-ignored sidecar `<out_dir>/provenance.json` (`sanet.infra.provenance`) and the run's `model_md5` tag: `sanet
evaluate` and `sanet register` find the training's run through them. They never enter the DVC outputs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet.config import Params
from sanet.contracts.files import TRAIN_PROVENANCE_FILE
from sanet.train.hooks import TrainHook

if TYPE_CHECKING:
    from sanet.train.trainer import Trainer

__all__ = ["MLflowHook"]


class MLflowHook(TrainHook):
    """Records a training in MLflow (rank 0): params and tags, step and epoch metrics, artifacts, the pyfunc model.

    Args:
        params: the run's parameters (logged flat; `tracking.*` says where and what).
        active: whether this process records (rank 0).
        run_name: instead of `train <model> <backbone> (<profile>)`.
        tags: extra run tags (`stage` sets the run's stage, `hpo_trial` for a trial; `mlflow.parentRunId` nests).
        log_checkpoint: log the final checkpoint as an artifact (a trial's is thrown away).
    """

    def __init__(
        self,
        params: Params,
        active: bool,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        log_checkpoint: bool = True,
    ) -> None:
        self.params = params
        self.active = active
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.log_checkpoint = log_checkpoint
        self._logger: Any = None
        self._stack = contextlib.ExitStack()
        if active:
            from sanet.infra.tracking import check_tracking_uri, tracking_uri

            check_tracking_uri(tracking_uri(params))

    def before_train(self, trainer: Trainer) -> None:
        if not self.active:
            return
        from mlflow.exceptions import MlflowException

        from sanet.engine.cpu_kernels import describe_cpu_kernels
        from sanet.infra.tracking import MetricLogger, model_label, run_tags, start_run

        params, ctx = self.params, trainer.ctx
        extra_tags = {
            "world_size": str(ctx.world_size),
            "device": ctx.device.type,
            "threads": str(trainer.threads),
            "cpu_kernels": describe_cpu_kernels(),
            "pipeline_run": trainer.pipeline_run,
        }
        stage = self.tags.get("stage", "train")  # a trial's run says stage=hpo_trial
        tags = run_tags(params, trainer.data_md5, stage=stage, extra={**extra_tags, **self.tags})
        run_name = self.run_name or f"train {model_label(params)} {params.model.backbone} ({params.profile})"
        resume_run_id = trainer.resume.run_id
        try:  # a resumed training continues its MLflow run...
            run = self._stack.enter_context(
                start_run(params, stage=stage, run_name=run_name, tags=tags, run_id=resume_run_id)
            )
        except MlflowException:  # ...unless this tracking store does not have it
            if resume_run_id is None:
                raise
            tags["resumed_from_run"] = resume_run_id
            run = self._stack.enter_context(start_run(params, stage=stage, run_name=run_name, tags=tags))
        trainer.run_id = run.info.run_id
        self._logger = MetricLogger()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._logger is not None:
            self._logger.log({k: v for k, v in metrics.items() if math.isfinite(v)}, step)

    def after_interrupt(self, trainer: Trainer) -> None:
        """Close the run as KILLED (a preempted run); the resumed training reopens it."""
        if self._logger is None:
            return
        import mlflow

        self._logger.flush()
        mlflow.set_tag("interrupted_at_step", str(trainer.global_step))
        mlflow.end_run("KILLED")

    def after_train(self, trainer: Trainer, result: Any, files: list[Path]) -> None:
        if self._logger is None or result.model_file is None:
            return
        import mlflow

        from sanet.serving import log_feature_model

        self.log_metrics(
            {"train/images_per_second_mean": result.images_per_second, "train/seconds": trainer.train_seconds},
            trainer.global_step,
        )
        provenance = self._write_provenance(trainer, result)
        self._logger.flush()
        for path in [*files, provenance]:
            mlflow.log_artifact(str(path), artifact_path="train")
        if self.log_checkpoint:
            mlflow.log_artifact(str(trainer.checkpoint_path), artifact_path="checkpoints")
        if self.params.tracking.log_model:
            log_feature_model(result.model_file, self.params)

    def close(self, error: BaseException | None = None) -> None:
        """End the run: FINISHED, or FAILED with `error` (which the trainer re-raises)."""
        if self._logger is not None:
            with contextlib.suppress(Exception):
                self._logger.close()
        if error is None:
            self._stack.__exit__(None, None, None)
        else:
            self._stack.__exit__(type(error), error, error.__traceback__)

    def _write_provenance(self, trainer: Trainer, result: Any) -> Path:
        """`<out_dir>/provenance.json` and the run's `model_md5` tag: the run-dependent facts of this training."""
        import mlflow

        from sanet.engine.cpu_kernels import describe_cpu_kernels
        from sanet.infra.hashing import file_md5
        from sanet.infra.provenance import write_sidecar
        from sanet.infra.tracking import git_sha

        def measured(value: float, digits: int) -> float | None:
            return round(value, digits) if math.isfinite(value) else None

        md5 = file_md5(result.model_file)
        path = write_sidecar(
            trainer.out_dir / TRAIN_PROVENANCE_FILE,
            {
                "model_file": str(result.model_file),
                "model_md5": md5,
                "train_run_id": trainer.run_id,
                "pipeline_run": trainer.pipeline_run,
                "git_sha": git_sha(),
                "data_md5": trainer.data_md5,
                "device": trainer.ctx.device.type,
                "world_size": trainer.ctx.world_size,
                "threads": trainer.threads,
                "cpu_kernels": describe_cpu_kernels(),
                "resumed_from": result.resumed_from,
                "images_per_second": measured(result.images_per_second, 2),
                "train_seconds": measured(trainer.train_seconds, 1),
                "seconds": measured(result.seconds, 1),
            },
        )
        mlflow.set_tags({"model_md5": md5})
        return path
