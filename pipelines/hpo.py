"""The Optuna pipeline: for each search space (AFE layers, AFE kernel, triplet weight) a study of its own:
create -> GPU workers in parallel sharing one storage -> summarise -> train and evaluate the best setting.

Fetch and masks run once for all studies. The storage is the secret `sanet-optuna` (`SANET_HPO_STORAGE`, e.g. a
PostgreSQL URL): every worker pod of a study opens it and takes trials until the study holds `hpo.trials`. Study
steps never come from Kubeflow's cache: a study is state outside the pipeline.

`python -m pipelines.hpo` compiles it to `pipelines/hpo.yaml`.
"""

from pathlib import Path

from kfp import compiler, dsl

from components.benchmark import train_model
from components.hpo import create_study, hpo_worker, summarise_study
from pipelines.benchmark import BENCHMARK_NAMES, DEFAULT_OVERRIDES, evaluate_all, fetch_and_mask
from pipelines.pod import on_cpus, on_gpus, with_secrets
from sanet.cluster.workspace import DEFAULT_PARAMS_FILE

STUDY_SPACES = ("afe_layers", "afe_kernel", "triplet_weight")
"""One study each (Table 4's two axes and the loss weight); `sanet hpo --space joint` searches all three at once."""


@dsl.pipeline(name="sanet-study-workers", description="Optuna workers of one study, one GPU pod each.")
def study_workers(
    params_file: str,
    overrides: list[str],
    space: str,
    workers: list[int],
    data_uri: str,
    masks_uri: str,
    trials: int,
    pipeline_run: str,
    weights_uri: str,
) -> list[int]:
    """Fan out the workers; returns the trials each ran (fan-in for the summary)."""
    with dsl.ParallelFor(workers) as worker:
        task = hpo_worker(
            params_file=params_file,
            overrides=overrides,
            space=space,
            worker=worker,
            data_uri=data_uri,
            masks_uri=masks_uri,
            trials=trials,
            pipeline_run=pipeline_run,
            weights_uri=weights_uri,
        ).set_display_name("worker")
        on_gpus(with_secrets(task, optuna=True), 1, cpu="4", memory="16Gi").set_caching_options(False)
    return dsl.Collected(task.outputs["Output"])


@dsl.pipeline(
    name="sanet-hpo",
    description="Optuna studies over SANet's AFE layers, AFE kernel size and triplet weight, each trained and "
    "evaluated at its best setting.",
)
def hpo_pipeline(
    data_source: str,
    work_root: str,
    data_md5: str = "",
    params_file: str = DEFAULT_PARAMS_FILE,
    overrides: list[str] = DEFAULT_OVERRIDES,
    workers: list[int] = [0, 1, 2, 3],  # noqa: B006  (a pipeline parameter's default, compiled into the YAML)
    trials: int = 0,
    benchmarks: list[str] = BENCHMARK_NAMES,
    gpus: int = 4,
    weights_uri: str = "",
) -> None:
    """Run the three studies side by side.

    Args:
        data_source, work_root, data_md5, params_file, overrides, benchmarks, weights_uri: as the benchmark pipeline.
        workers: worker ids, one GPU pod each per study.
        trials: the size of each study, all its workers together (0: `hpo.trials` of the parameters).
        gpus: GPUs of each study's final training.
    """
    fetch, masks = fetch_and_mask(data_source, data_md5, work_root, params_file, overrides, weights_uri)
    work_uri, data_uri, pipeline_run = (fetch.outputs[key] for key in ("work_uri", "data_uri", "pipeline_run"))
    masks_uri = masks.outputs["Output"]

    for space in STUDY_SPACES:
        create = create_study(
            params_file=params_file, overrides=overrides, space=space, pipeline_run=pipeline_run
        ).set_display_name(f"create study {space}")
        on_cpus(with_secrets(create, optuna=True)).set_caching_options(False)
        create.after(masks)

        study = study_workers(
            params_file=params_file,
            overrides=overrides,
            space=space,
            workers=workers,
            data_uri=data_uri,
            masks_uri=masks_uri,
            trials=trials,
            pipeline_run=pipeline_run,
            weights_uri=weights_uri,
        ).set_display_name(f"workers {space}")
        study.after(create)

        summary = summarise_study(
            params_file=params_file, overrides=overrides, space=space, work_uri=work_uri, pipeline_run=pipeline_run
        ).set_display_name(f"summarise {space}")
        on_cpus(with_secrets(summary, optuna=True)).set_caching_options(False)
        summary.after(study)

        best = train_model(
            params_file=params_file,
            overrides=summary.outputs["train_overrides"],
            data_uri=data_uri,
            masks_uri=masks_uri,
            work_uri=work_uri,
            gpus=gpus,
            name=f"hpo/{space}/train",
            pipeline_run=pipeline_run,
            weights_uri=weights_uri,
        ).set_display_name(f"train best {space}")
        on_gpus(with_secrets(best), gpus).set_retry(2, backoff_duration="60s")

        evaluate_all(
            params_file=params_file,
            overrides=summary.outputs["train_overrides"],
            benchmarks=benchmarks,
            data_uri=data_uri,
            train_uri=best.outputs["Output"],
            work_uri=work_uri,
            prefix=f"hpo/{space}/eval",
            pipeline_run=pipeline_run,
        ).set_display_name(f"evaluate best {space}")


def compile_to(path: str | Path) -> Path:
    """Compile the pipeline to `path` (YAML)."""
    compiler.Compiler().compile(pipeline_func=hpo_pipeline, package_path=str(path))
    return Path(path)


if __name__ == "__main__":
    print(compile_to(Path(__file__).with_suffix(".yaml")))
