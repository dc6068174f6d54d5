"""Components of the Optuna pipeline: create a study, run a worker, summarise it.

The workers of one study share it through the storage `SANET_HPO_STORAGE` names (a PostgreSQL URL from a
Kubernetes secret on a cluster); each trial is a nested MLflow run under the study's parent run.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def create_study(params_file: str, overrides: list[str], space: str, pipeline_run: str) -> str:
    """Create (or find) the study of one search space and its MLflow parent run; returns the study name."""
    from sanet.cluster.study_steps import hpo_create_step

    return hpo_create_step(params_file, overrides, space, pipeline_run=pipeline_run).name


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def hpo_worker(
    params_file: str,
    overrides: list[str],
    space: str,
    worker: int,
    data_uri: str,
    masks_uri: str,
    trials: int,
    pipeline_run: str,
    weights_uri: str,
    metrics: Output[Metrics],
) -> int:
    """One worker: trials until the study holds `trials` (0: `hpo.trials`), all workers together; returns its count."""
    from sanet.cluster.study_steps import hpo_worker_step

    result = hpo_worker_step(
        params_file,
        overrides,
        space,
        worker,
        data_uri,
        masks_uri,
        trials=trials,
        pipeline_run=pipeline_run,
        weights_uri=weights_uri,
    )
    for key in ("trials_run", "completed", "pruned", "failed"):
        metrics.log_metric(key, float(getattr(result, key)))
    return result.trials_run


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def summarise_study(
    params_file: str,
    overrides: list[str],
    space: str,
    work_uri: str,
    pipeline_run: str,
    summary: Output[Markdown],
    metrics: Output[Metrics],
) -> NamedTuple("SummaryOutputs", [("best_value", float), ("train_overrides", list[str])]):
    """Best params, history and importance plots of a study; returns the overrides that train its best setting."""
    from sanet.cluster.study_steps import hpo_summarise_step

    result = hpo_summarise_step(params_file, overrides, space, work_uri, pipeline_run=pipeline_run)
    with open(summary.path, "w") as handle:
        handle.write(result.markdown())
    for key, value in result.metrics().items():
        metrics.log_metric(key, value)
    return (result.best_value, result.train_overrides)
