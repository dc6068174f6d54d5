"""Components of the benchmark pipeline: fetch data, masks, train, evaluate, report, promotion gate, register.

Each body imports its step from `sanet.cluster.steps` inside the function (Kubeflow runs the function's source
alone in the image: module-level names are not there) and maps the step's result to outputs. `params_file` is the
image's params.yaml and `overrides` are `key=value` strings, as `sanet --set`; `pipeline_run` tags the MLflow runs
of one pipeline run.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components.image import IMAGE, MASKS_IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fetch_data(
    source: str,
    dvc_md5: str,
    work_root: str,
    run_id: str,
    run_name: str,
    data: Output[Markdown],
    metrics: Output[Metrics],
) -> NamedTuple("FetchOutputs", [("work_uri", str), ("data_uri", str), ("data_md5", str), ("pipeline_run", str)]):
    """Fetch the benchmarks (a DVC remote and the md5 of data.dvc, or a prefix) into the run's work prefix.

    `pipeline_run` is `run_name` resolved once, here: the value every later step tags its MLflow runs with (a
    placeholder resolved inside a nested pipeline could name the sub-pipeline instead).
    """
    from sanet.cluster.steps import fetch_step

    result = fetch_step(source, work_root, run_id, dvc_md5=dvc_md5)
    with open(data.path, "w") as handle:
        handle.write(result.markdown())
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    return (result.work_uri, result.data_uri, result.data_md5, run_name)


@dsl.component(base_image=MASKS_IMAGE, install_kfp_package=False)
def part_masks(
    params_file: str,
    overrides: list[str],
    data_uri: str,
    work_uri: str,
    pipeline_run: str,
    weights_uri: str,
    metrics: Output[Metrics],
) -> str:
    """Part masks of every benchmark (OpenPifPaf keypoints, or the synthetic benchmark's); returns their URI."""
    from sanet.cluster.steps import masks_step

    result = masks_step(params_file, overrides, data_uri, work_uri, pipeline_run=pipeline_run, weights_uri=weights_uri)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    return result.masks_uri


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(
    params_file: str,
    overrides: list[str],
    data_uri: str,
    masks_uri: str,
    work_uri: str,
    gpus: int,
    name: str,
    pipeline_run: str,
    weights_uri: str,
    metrics: Output[Metrics],
) -> str:
    """Train under `torchrun --nproc_per_node=<gpus>` (resuming a retried pod's checkpoint); returns the folder URI."""
    from sanet.cluster.steps import train_step

    result = train_step(
        params_file,
        overrides,
        data_uri,
        masks_uri,
        work_uri,
        gpus=gpus,
        name=name,
        pipeline_run=pipeline_run,
        weights_uri=weights_uri,
    )
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    return result.train_uri


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(
    params_file: str,
    overrides: list[str],
    benchmark: str,
    data_uri: str,
    train_uri: str,
    work_uri: str,
    prefix: str,
    pipeline_run: str,
    metrics: Output[Metrics],
    summary: Output[Markdown],
) -> str:
    """Evaluate the trained model on one benchmark; returns the URI of its evaluation folder."""
    from sanet.cluster.steps import evaluate_step

    result = evaluate_step(
        params_file, overrides, benchmark, data_uri, train_uri, work_uri, prefix=prefix, pipeline_run=pipeline_run
    )
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    with open(summary.path, "w") as handle:
        handle.write(result.markdown())
    return result.eval_uri


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def paper_report(
    params_file: str,
    overrides: list[str],
    eval_uris: list[str],
    train_uri: str,
    work_uri: str,
    prefix: str,
    pipeline_run: str,
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> str:
    """The paper-comparison report (Tables 1-4) of the evaluations; returns the URI of the report folder."""
    from sanet.cluster.steps import report_step

    result = report_step(
        params_file, overrides, eval_uris, train_uri, work_uri, prefix=prefix, pipeline_run=pipeline_run
    )
    with open(report.path, "w") as handle:
        handle.write(result.markdown)
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    return result.report_uri


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promotion_gate(
    params_file: str, overrides: list[str], train_uri: str, eval_uris: list[str], decision: Output[Markdown]
) -> bool:
    """True when the evaluated model may become the champion (no regression beyond the tolerance, or no champion)."""
    from sanet.cluster.steps import gate_step

    result = gate_step(params_file, overrides, train_uri, eval_uris)
    with open(decision.path, "w") as handle:
        handle.write(result.markdown())
    return result.passed


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_model(
    params_file: str,
    overrides: list[str],
    train_uri: str,
    eval_uris: list[str],
    work_uri: str,
    pipeline_run: str,
    record: Output[Markdown],
) -> int:
    """Register the model as a new version (alias candidate; champion when the gate passes); returns the version."""
    from sanet.cluster.steps import register_step

    result = register_step(params_file, overrides, train_uri, eval_uris, work_uri, pipeline_run=pipeline_run)
    with open(record.path, "w") as handle:
        handle.write(result.markdown())
    return result.version
