"""One trial: train the sampled settings on the short schedule, report the validation mAP, let the pruner stop it.

Each trial is an MLflow run nested under the study's parent run (tag `mlflow.parentRunId`), tagged with the study,
the trial number, the space and, once it ends, `optuna_state` (COMPLETE, PRUNED or FAIL). A pruned trial's run is
KILLED rather than FAILED: it stopped on purpose. The trial's checkpoints are deleted when it ends, whatever the
outcome; its metrics stay in MLflow.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet.hpo.errors import HPOError
from sanet.hpo.settings import trial_params
from sanet.hpo.spaces import DOTTED, suggest

if TYPE_CHECKING:
    import optuna

    from sanet.config import Params
    from sanet.hpo.study import StudyInfo

__all__ = ["RUN_ATTR", "STAGE", "WORKER_ATTR", "TrialObjective", "describe_values"]

RUN_ATTR = "mlflow_run_id"  # trial user attribute: the trial's MLflow run
WORKER_ATTR = "worker"  # trial user attribute: the worker index that ran it
STAGE = "hpo_trial"  # the `stage` tag of a trial's run


def describe_values(values: Mapping[str, Any]) -> str:
    """`afe_layers=4, triplet_weight=0.0312`: sampled values by their short names, for run names and messages."""
    short = {dotted: name for name, dotted in DOTTED.items()}
    parts = []
    for key, value in values.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{short.get(key, key)}={shown}")
    return ", ".join(parts)


class TrialObjective:
    """The objective `study.optimize` calls: one short training per trial, scored by the final validation mAP."""

    def __init__(
        self, params: Params, space: str, info: StudyInfo, worker: int = 0, progress: bool = True, device: str = "auto"
    ) -> None:
        self.params, self.space, self.info = params, space, info
        self.worker, self.progress, self.device = worker, progress, device
        self.numbers: list[int] = []  # the trials this objective ran, in order

    def out_dir(self, number: int) -> Path:
        """Where trial `number` keeps its checkpoints while it runs."""
        return Path(self.params.hpo.out_dir) / self.info.name / f"trial-{number}"

    def on_validation(self, trial: optuna.Trial, run: dict[str, str], epoch: int, metrics: Mapping[str, float]) -> None:
        """Report the epoch's validation mAP; raise TrialPruned when the pruner says so (never after the last epoch)."""
        import mlflow
        import optuna

        if not run:  # the trainer's run is active here: remember it, so that even a crashed trial points to it
            active = mlflow.active_run()
            if active is not None:
                run["id"] = active.info.run_id
                trial.set_user_attr(RUN_ATTR, run["id"])
        value = float(metrics["mAP"])
        trial.report(value, epoch)
        if epoch < self.params.hpo.epochs and trial.should_prune():
            raise optuna.TrialPruned(f"validation mAP {value:.4f} at epoch {epoch}: below the median of earlier trials")

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        from sanet.engine.trainer import TrainHooks, train

        self.numbers.append(trial.number)
        trial.set_user_attr(WORKER_ATTR, self.worker)
        values = suggest(trial, self.space, self.params.hpo.ranges)
        settings = trial_params(self.params, values)
        run: dict[str, str] = {}
        hooks = TrainHooks(
            run_name=f"trial {trial.number} · {describe_values(values)} ({self.params.profile})",
            tags={
                "mlflow.parentRunId": self.info.parent_run_id,
                "optuna_study": self.info.name,
                "optuna_trial": str(trial.number),
                "hpo_space": self.space,
                "hpo_worker": str(self.worker),
                "stage": STAGE,
            },
            on_validation=lambda epoch, metrics: self.on_validation(trial, run, epoch, metrics),
            log_checkpoint=False,
        )
        out = self.out_dir(trial.number)
        state = "FAIL"
        try:
            result = train(settings, out_dir=out, device=self.device, resume=False, progress=self.progress, hooks=hooks)
            if result.run_id:
                run["id"] = result.run_id
            if result.interrupted or not result.final:
                raise HPOError(f"trial {trial.number} was interrupted (SIGTERM) before it finished")
            state = "COMPLETE"
            return float(result.final["mAP"])
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            shutil.rmtree(out, ignore_errors=True)
            self._record(trial, run.get("id"), state)

    def _record(self, trial: optuna.Trial, run_id: str | None, state: str) -> None:
        """Tag the trial's run with its outcome (a pruned run becomes KILLED); never hides the trial's own error."""
        from mlflow.exceptions import MlflowException

        from sanet.hpo.study import mlflow_client

        try:
            client = mlflow_client(self.params)
            run_id = run_id or self._find_run(client, trial.number)
            if run_id is None:  # the training failed before its MLflow run started
                return
            trial.set_user_attr(RUN_ATTR, run_id)
            client.set_tag(run_id, "optuna_state", state)
            if state == "PRUNED":
                client.set_terminated(run_id, "KILLED")
        except MlflowException as exc:
            print(f"sanet hpo: could not tag the MLflow run of trial {trial.number} ({exc.message.splitlines()[0]})")

    def _find_run(self, client: Any, number: int) -> str | None:
        experiment = client.get_experiment_by_name(self.info.experiment)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.optuna_study = '{self.info.name}' and tags.optuna_trial = '{number}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None
