"""The benchmark pipeline: fetch data -> masks -> train (torchrun, multi-GPU) -> evaluate every benchmark in
parallel -> report -> register, behind the promotion gate. The DVC pipeline's stages, on a GPU cluster.

`python -m pipelines.benchmark` compiles it to `pipelines/benchmark.yaml` (checked in; `sanet kfp compile` does
both pipelines, `sanet kfp submit` runs one).
"""

from pathlib import Path
from typing import Any

from kfp import compiler, dsl
from kfp.dsl import PipelineTask

from components.benchmark import (
    evaluate_model,
    fetch_data,
    paper_report,
    part_masks,
    promotion_gate,
    register_model,
    train_model,
)
from pipelines.pod import on_cpus, on_gpus, with_secrets
from sanet.cluster.workspace import DEFAULT_PARAMS_FILE
from sanet.data.benchmarks import BENCHMARKS

BENCHMARK_NAMES = list(BENCHMARKS)
DEFAULT_OVERRIDES = ["profile=paper"]
"""The image's params.yaml defaults to the CPU demo profile; a cluster runs the paper's settings."""


def fetch_and_mask(
    data_source: Any, data_md5: Any, work_root: Any, params_file: Any, overrides: Any, weights_uri: Any
) -> tuple[PipelineTask, PipelineTask]:
    """The first steps of every pipeline: fetch the data into the run's prefix (`<work_root>/<run id>`), then masks.

    The fetch step also resolves the run's name once, for every later step's `pipeline_run` tag.
    """
    fetch = fetch_data(
        source=data_source,
        dvc_md5=data_md5,
        work_root=work_root,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    ).set_display_name("fetch data")
    on_cpus(with_secrets(fetch, mlflow=False))
    masks = part_masks(
        params_file=params_file,
        overrides=overrides,
        data_uri=fetch.outputs["data_uri"],
        work_uri=fetch.outputs["work_uri"],
        pipeline_run=fetch.outputs["pipeline_run"],
        weights_uri=weights_uri,
    ).set_display_name("part masks")
    on_gpus(with_secrets(masks), 1, cpu="4", memory="16Gi")
    return fetch, masks


@dsl.pipeline(name="sanet-evaluate-all", description="Evaluate a trained model on every benchmark, in parallel.")
def evaluate_all(
    params_file: str,
    overrides: list[str],
    benchmarks: list[str],
    data_uri: str,
    train_uri: str,
    work_uri: str,
    prefix: str,
    pipeline_run: str,
) -> list[str]:
    """One GPU pod per benchmark; returns the evaluation folders' URIs (fan-in for the report and the gate)."""
    with dsl.ParallelFor(benchmarks) as benchmark:
        evaluation = evaluate_model(
            params_file=params_file,
            overrides=overrides,
            benchmark=benchmark,
            data_uri=data_uri,
            train_uri=train_uri,
            work_uri=work_uri,
            prefix=prefix,
            pipeline_run=pipeline_run,
        ).set_display_name("evaluate")
        on_gpus(with_secrets(evaluation), 1, cpu="4", memory="16Gi")
    return dsl.Collected(evaluation.outputs["Output"])


@dsl.pipeline(
    name="sanet-benchmark",
    description="SANet (BMVC 2023): part masks, training, evaluation on the partial and holistic benchmarks, the "
    "paper-comparison report and the gated model registration.",
)
def benchmark_pipeline(
    data_source: str,
    work_root: str,
    data_md5: str = "",
    params_file: str = DEFAULT_PARAMS_FILE,
    overrides: list[str] = DEFAULT_OVERRIDES,
    benchmarks: list[str] = BENCHMARK_NAMES,
    gpus: int = 4,
    weights_uri: str = "",
) -> None:
    """Run every stage once.

    Args:
        data_source: the DVC remote (`s3://bucket/dvcstore`, with `data_md5`) or a prefix holding the benchmarks.
        work_root: where runs keep their data, masks, model and results (`<work_root>/<run id>/...`).
        data_md5: the `md5` of data.dvc (`<32 hex>.dir`) when `data_source` is a DVC remote; empty for a prefix.
        params_file: the parameters in the image; `overrides` are `key=value` on top (as `sanet --set`).
        benchmarks: the benchmarks to evaluate on.
        gpus: GPUs of the training pod (`torchrun --nproc_per_node=<gpus>`).
        weights_uri: the team's weights, laid out as a checkout's `weights/` folder (the OpenPifPaf checkpoint),
            with `torch/hub/checkpoints/` for the ImageNet files; nothing is downloaded from the internet.
    """
    fetch, masks = fetch_and_mask(data_source, data_md5, work_root, params_file, overrides, weights_uri)
    work_uri, data_uri, pipeline_run = (fetch.outputs[key] for key in ("work_uri", "data_uri", "pipeline_run"))

    train = train_model(
        params_file=params_file,
        overrides=overrides,
        data_uri=data_uri,
        masks_uri=masks.outputs["Output"],
        work_uri=work_uri,
        gpus=gpus,
        name="train",
        pipeline_run=pipeline_run,
        weights_uri=weights_uri,
    ).set_display_name("train")
    on_gpus(with_secrets(train), gpus).set_retry(2, backoff_duration="60s")  # a retried pod resumes its checkpoint
    train_uri = train.outputs["Output"]

    evaluations = evaluate_all(
        params_file=params_file,
        overrides=overrides,
        benchmarks=benchmarks,
        data_uri=data_uri,
        train_uri=train_uri,
        work_uri=work_uri,
        prefix="eval",
        pipeline_run=pipeline_run,
    ).set_display_name("evaluate all")

    report = paper_report(
        params_file=params_file,
        overrides=overrides,
        eval_uris=evaluations.output,
        train_uri=train_uri,
        work_uri=work_uri,
        prefix="reports",
        pipeline_run=pipeline_run,
    ).set_display_name("report")
    on_cpus(with_secrets(report))

    gate = promotion_gate(
        params_file=params_file, overrides=overrides, train_uri=train_uri, eval_uris=evaluations.output
    ).set_display_name("promotion gate")
    on_cpus(with_secrets(gate)).set_caching_options(False)  # the champion it compares with changes between runs
    gate.after(report)

    with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712  (a pipeline condition)
        register = register_model(
            params_file=params_file,
            overrides=overrides,
            train_uri=train_uri,
            eval_uris=evaluations.output,
            work_uri=work_uri,
            pipeline_run=pipeline_run,
        ).set_display_name("register")
        on_cpus(with_secrets(register)).set_caching_options(False)


def compile_to(path: str | Path) -> Path:
    """Compile the pipeline to `path` (YAML)."""
    compiler.Compiler().compile(pipeline_func=benchmark_pipeline, package_path=str(path))
    return Path(path)


if __name__ == "__main__":
    print(compile_to(Path(__file__).with_suffix(".yaml")))
