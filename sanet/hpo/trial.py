"""One trial: train the sampled settings on the short schedule, report the validation score, let the pruner stop it.

The objective (`TrialObjective`, what a study maximises) is measured on the `hpo.val_ids` identities held out of
`data.train`'s training split (never a test benchmark), after every epoch (`sanet.train.validation`):

    score = (holistic mAP + partial mAP) / 2

the holistic mAP ranking every held-out image against the other held-out images, the partial mAP ranking a seeded
vertical crop of every held-out image (`sanet.data.holdout.partial_queries`) against the holistic ones, both with
the camera rule. The trial's value is the mean score of its last `hpo.score_epochs` validations (1: the final one);
each epoch's score goes to the pruner. The trial's user attributes `holistic_mAP`, `partial_mAP`, `partial_rank1`
and `mAP` (the one-query-per-identity protocol) are means over the same validations, and `epoch_scores` lists every
epoch's score; the MLflow run has them per epoch as `val/<name>` (`final/<name>` for the last).

Each trial is an MLflow run nested under the study's parent run (tag `mlflow.parentRunId`), tagged with the study,
the trial number, the space and, once it ends, `optuna_state` (COMPLETE, PRUNED or FAIL). A pruned trial's run is
KILLED rather than FAILED: it stopped on purpose. The trial's checkpoints are deleted when it ends, whatever the
outcome; its metrics stay in MLflow. Its MLflow params are the trial's settings under their dotted `params.yaml`
keys, the sampled values included (`model.afe.layers` = 5).

A trial that samples the settings of a COMPLETE trial is not trained: it is PRUNED before any work, with the user
attribute `duplicate_of` and no MLflow run (`sanet.hpo.search.check_duplicate`).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet.hpo.errors import HPOError
from sanet.hpo.settings import score_epochs, trial_params
from sanet.hpo.spaces import DOTTED, suggest

if TYPE_CHECKING:
    import optuna

    from sanet.config import Params
    from sanet.hpo.study import StudyInfo

__all__ = ["RUN_ATTR", "SCORED_ATTRS", "STAGE", "WORKER_ATTR", "TrialObjective", "describe_values"]

RUN_ATTR = "mlflow_run_id"  # trial user attribute: the trial's MLflow run
WORKER_ATTR = "worker"  # trial user attribute: the worker index that ran it
STAGE = "hpo_trial"  # the `stage` tag of a trial's run
SCORED_ATTRS = ("holistic_mAP", "partial_mAP", "partial_rank1", "mAP")  # user attributes: means over scored epochs


def describe_values(values: Mapping[str, Any]) -> str:
    """`afe_layers=4, triplet_weight=0.0312`: sampled values by their short names, for run names and messages."""
    short = {dotted: name for name, dotted in DOTTED.items()}
    parts = []
    for key, value in values.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{short.get(key, key)}={shown}")
    return ", ".join(parts)


class TrialObjective:
    """The objective `study.optimize` calls: one short training per trial, scored on held-out identities (module
    docstring: the mean of the holistic and the partial mAP, over the last `hpo.score_epochs` validations)."""

    def __init__(
        self, params: Params, space: str, info: StudyInfo, worker: int = 0, progress: bool = True, device: str = "auto"
    ) -> None:
        self.params, self.space, self.info = params, space, info
        self.worker, self.progress, self.device = worker, progress, device
        self.numbers: list[int] = []  # the trials this objective ran, in order
        self.duplicates: list[int] = []  # those of them that were duplicates, not trained
        self.validations: list[dict[str, float]] = []  # the current trial's validations: epoch, score, SCORED_ATTRS

    def out_dir(self, number: int) -> Path:
        """Where trial `number` keeps its checkpoints while it runs."""
        return Path(self.params.hpo.out_dir) / self.info.name / f"trial-{number}"

    def scored(self) -> dict[str, float]:
        """The means of the score and SCORED_ATTRS over the last `hpo.score_epochs` validations so far."""
        last = self.validations[-score_epochs(self.params) :]
        return {key: sum(v[key] for v in last) / len(last) for key in ("score", *SCORED_ATTRS)}

    def on_validation(self, trial: optuna.Trial, run: dict[str, str], epoch: int, metrics: Mapping[str, float]) -> None:
        """Report the epoch's validation score; raise TrialPruned when the pruner says so (not after the last epoch)."""
        import mlflow
        import optuna

        from sanet.train.validation import SCORE

        if not run:  # the trainer's run is active here: remember it, so that even a crashed trial points to it
            active = mlflow.active_run()
            if active is not None:
                run["id"] = active.info.run_id
                trial.set_user_attr(RUN_ATTR, run["id"])
        if SCORE not in metrics:
            raise HPOError("the trial's validation has no held-out score: train.val_ids must be set for a trial")
        value = float(metrics[SCORE])
        self.validations.append({"epoch": epoch, "score": value} | {k: float(metrics[k]) for k in SCORED_ATTRS})
        for key, mean in self.scored().items():
            if key != "score":
                trial.set_user_attr(key, mean)
        trial.set_user_attr("epoch_scores", [v["score"] for v in self.validations])
        trial.report(value, epoch)
        if epoch < self.params.hpo.epochs and trial.should_prune():
            raise optuna.TrialPruned(
                f"validation score {value:.4f} at epoch {epoch}: below the median of earlier trials"
            )

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        from sanet.hpo.search import check_duplicate
        from sanet.train.stage import TrainHooks, run_train

        self.numbers.append(trial.number)
        self.validations = []
        trial.set_user_attr(WORKER_ATTR, self.worker)
        values = suggest(trial, self.space, self.params.hpo.ranges)
        try:
            check_duplicate(trial)
        except optuna.TrialPruned:
            self.duplicates.append(trial.number)
            raise
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
            result = run_train(
                settings, out_dir=out, device=self.device, resume=False, progress=self.progress, hooks=hooks
            )
            if result.run_id:
                run["id"] = result.run_id
            if result.interrupted or not result.final or not self.validations:
                raise HPOError(f"trial {trial.number} was interrupted (SIGTERM) before it finished")
            state = "COMPLETE"
            return self.scored()["score"]
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
