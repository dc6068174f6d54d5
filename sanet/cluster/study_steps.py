"""The Optuna pipeline's steps: create a study, run one worker, summarise (`sanet.cluster.steps` says how).

The workers of a study share it through the storage `SANET_HPO_STORAGE` names (a Kubernetes secret on a cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sanet.cluster.transfer import download, join_uri, upload
from sanet.cluster.workspace import pipeline_run_tag, step_params, step_scratch, weights

__all__ = ["StudyStep", "SummaryStep", "WorkerStep", "hpo_create_step", "hpo_summarise_step", "hpo_worker_step"]


@dataclass(frozen=True)
class StudyStep:
    """The study a pipeline's workers share."""

    name: str
    storage: str
    parent_run_id: str


def hpo_create_step(params_file: str, overrides: Sequence[str], space: str, pipeline_run: str = "") -> StudyStep:
    """Create (or find) the study of `space` in the shared storage (`SANET_HPO_STORAGE`) and its MLflow parent run."""
    from sanet.hpo.study import create_study
    from sanet.infra.preflight import redact

    with step_scratch() as scratch, pipeline_run_tag(pipeline_run):
        info = create_study(step_params(params_file, overrides, scratch), space)
        return StudyStep(info.name, redact(info.storage), info.parent_run_id)


@dataclass(frozen=True)
class WorkerStep:
    """What one worker pod ran."""

    study: str
    trials_run: int
    completed: int
    pruned: int
    failed: int


def hpo_worker_step(
    params_file: str,
    overrides: Sequence[str],
    space: str,
    worker: int,
    data_uri: str,
    masks_uri: str,
    trials: int = 0,
    device: str = "auto",
    pipeline_run: str = "",
    weights_uri: str = "",
) -> WorkerStep:
    """One Optuna worker: trials of `space` until the study holds `trials` (0: `hpo.trials`), all workers together."""
    from sanet.engine.cpu_kernels import pin_cpu_kernels
    from sanet.hpo.worker import run_worker

    with step_scratch() as scratch, pipeline_run_tag(pipeline_run):
        params = step_params(params_file, overrides, scratch)
        pin_cpu_kernels(params.train.cpu_kernels)  # as `sanet hpo` does, before numpy and torch load
        with weights(weights_uri, scratch):  # after the parameters are validated
            download(data_uri, params.data.root)
            download(masks_uri, params.masks.out_dir)
            result = run_worker(params, space, worker=worker, trials=trials or None, progress=False, device=device)
            return WorkerStep(result.study, result.trials_run, result.completed, result.pruned, result.failed)


@dataclass(frozen=True)
class SummaryStep:
    """The best trial of a study, as values and as `key=value` overrides for training it in full."""

    name: str
    best_value: float
    best_params: dict[str, Any]
    best_overrides: list[str]
    train_overrides: list[str]  # the caller's overrides, then the best ones: what trains the best setting in full
    counts: dict[str, int]
    summary_uri: str
    summary_json: str

    def metrics(self) -> dict[str, float]:
        """The best validation score (held-out holistic and partial mAP) and the trials by state."""
        return {"best_value": self.best_value} | {f"trials/{k}": float(v) for k, v in self.counts.items()}

    def markdown(self) -> str:
        """The best settings and the study's summary JSON."""
        best = ", ".join(self.best_overrides)
        head = f"# {self.name}\n\nBest: {best} (validation score {100 * self.best_value:.1f}%)"
        return f"{head}\n\n```json\n{self.summary_json}\n```\n"


def hpo_summarise_step(
    params_file: str, overrides: Sequence[str], space: str, work_uri: str, pipeline_run: str = ""
) -> SummaryStep:
    """Summarise the study of `space` (best params, history and importance plots) to `<work_uri>/hpo/<space>`."""
    from sanet.hpo.spaces import to_dotted
    from sanet.hpo.summary import summarise_study

    with step_scratch() as scratch, pipeline_run_tag(pipeline_run):
        params = step_params(params_file, overrides, scratch)
        result = summarise_study(params, space)
        summary_uri = join_uri(work_uri, "hpo", space)
        for path in [result.json_path, *result.figures]:
            upload(path, summary_uri)
        best = [f"{key}={value}" for key, value in to_dotted(result.best_params).items()]
        return SummaryStep(
            train_overrides=[*overrides, *best],
            name=result.name,
            best_value=result.best_value,
            best_params=dict(result.best_params),
            best_overrides=best,
            counts=dict(result.counts),
            summary_uri=summary_uri,
            summary_json=result.json_path.read_text(),
        )
