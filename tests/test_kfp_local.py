"""The benchmark pipeline end to end with kfp's local runner, on the tiny synthetic profile.

`kfp.local.SubprocessRunner(use_venv=False)` runs every component of the compiled pipeline as a subprocess of this
environment (GPU requests, secrets and shared memory are Kubernetes settings it ignores). As on a cluster: the data
comes from a DVC remote on S3 (moto's server on 127.0.0.1, filled by a real `dvc push`), steps hand each other
data by URI under the run's work prefix, and MLflow records every step; the tracking store is a sqlite file here
(the cluster's server on PostgreSQL is covered by tests/test_registry.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import mlflow
import pytest
import yaml
from kfp_local import evaluate, fixed_conditions, print_restored
from s3_server import LocalS3

from sanet.data.benchmarks import BENCHMARKS

# kfp warns that the components' image is not a plain Python image: locally they run in this environment instead.
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")

BIN = Path(sys.executable).parent
BUCKET = "team-reid"


@pytest.fixture(autouse=True)
def _real_print() -> Iterator[None]:
    """Local runs with parallel tasks can leave kfp's indenting `print` behind (tests/kfp_local.py)."""
    with print_restored():
        yield


def _dvc_push(project: Path, env: dict[str, str], remote: str, endpoint: str) -> str:
    """`dvc add data` and `dvc push` to `remote` in a fresh DVC project; returns the md5 data.dvc pins."""
    for args in (
        ["dvc", "init", "--no-scm", "-q"],
        ["dvc", "remote", "add", "-d", "team", remote],
        ["dvc", "remote", "modify", "team", "endpointurl", endpoint],
        ["dvc", "add", "-q", "data"],
        ["dvc", "push", "-q"],
    ):
        done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}\n{done.stderr}"
    return str(yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"])


def _keys(client: Any, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys |= {item["Key"] for item in page.get("Contents", [])}
    return keys


@pytest.fixture(scope="module")
def local_run(
    tiny_synth_root: Path, tiny_demo_params, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One local run of the benchmark pipeline; yields what the tests need to look at it."""
    from kfp import local

    from pipelines.benchmark import benchmark_pipeline

    root = tmp_path_factory.mktemp("kfp")
    project = root / "project"
    shutil.copytree(tiny_synth_root, project / "data")
    params_file = tiny_demo_params(root / "params.yaml")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    with LocalS3() as s3, pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith(("MLFLOW_", "SANET_", "AWS_"))]:
            env.delenv(key)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", s3.endpoint)
        env.setenv("MLFLOW_TRACKING_URI", tracking)
        env.setenv("SANET_SCRATCH_DIR", str(root / "scratch"))
        env.setenv("SANET_HPO_STORAGE", f"sqlite:///{root / 'optuna.db'}")
        env.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        md5 = _dvc_push(project, dict(os.environ), f"s3://{BUCKET}/dvcstore", s3.endpoint)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "kfp-root"))
        with fixed_conditions():
            benchmark_pipeline(
                data_source=f"s3://{BUCKET}/dvcstore",
                work_root=f"s3://{BUCKET}/runs",
                data_md5=md5,
                params_file=str(params_file),
                overrides=[],
                benchmarks=list(BENCHMARKS),
                gpus=0,
            )
        runs = {key.split("/")[1] for key in _keys(client, "runs/")}
        assert len(runs) == 1, runs
        run_id = runs.pop()
        yield {
            "root": root,
            "client": client,
            "prefix": f"runs/{run_id}",
            "tracking": tracking,
            "params_file": params_file,
            "md5": md5,
        }


def test_every_step_writes_its_outputs_under_the_run_prefix(local_run: dict[str, Any]) -> None:
    keys = _keys(local_run["client"], local_run["prefix"])
    prefix = local_run["prefix"]
    assert f"{prefix}/train/model.pt" in keys
    assert any(key.startswith(f"{prefix}/train/checkpoints/") for key in keys)  # a retried pod resumes from these
    assert any(key.startswith(f"{prefix}/masks/") for key in keys)
    assert any(key.startswith(f"{prefix}/data/Market-1501-v15.09.15/") for key in keys)
    for name in BENCHMARKS:
        assert f"{prefix}/eval/{name}/metrics.json" in keys, name
    for name in ("benchmark.md", "registry.json", "masks_coverage.json", "figures/cmc.png"):
        assert f"{prefix}/reports/{name}" in keys, name


def test_the_report_and_registry_record_are_the_pipelines_results(local_run: dict[str, Any]) -> None:
    client, prefix = local_run["client"], local_run["prefix"]
    report = client.get_object(Bucket=BUCKET, Key=f"{prefix}/reports/benchmark.md")["Body"].read().decode()
    record = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/reports/registry.json")["Body"].read())
    sidecar = f"{prefix}/reports/registry.provenance.json"
    provenance = json.loads(client.get_object(Bucket=BUCKET, Key=sidecar)["Body"].read())
    assert "Partial-REID" in report
    assert record["decision"]["kind"] == "first" and "version" not in record  # the version: MLflow's bookkeeping
    assert provenance["version"] == 1 and provenance["model_md5"] == record["model_md5"]
    for name in BENCHMARKS:
        metrics = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/eval/{name}/metrics.json")["Body"].read())
        assert record["benchmarks"][name]["metrics"]["mAP"] == pytest.approx(metrics["mAP"])


def test_the_gate_passed_so_the_model_is_registered_as_champion(local_run: dict[str, Any]) -> None:
    client = mlflow.MlflowClient(local_run["tracking"])
    model = client.get_registered_model("sanet")
    assert {alias: int(version) for alias, version in model.aliases.items()} == {"candidate": 1, "champion": 1}
    version = client.get_model_version("sanet", "1")
    assert version.tags["gate"] == "first"


def test_every_step_logs_to_mlflow_under_one_pipeline_run(local_run: dict[str, Any]) -> None:
    client = mlflow.MlflowClient(local_run["tracking"])
    runs = [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]
    stages = {run.data.tags.get("stage") for run in runs}
    assert {"masks", "train", "evaluate", "report", "register"} <= stages
    assert len({run.data.tags.get("pipeline_run") for run in runs}) == 1
    train = next(run for run in runs if run.data.tags.get("stage") == "train")
    assert train.data.tags["data_md5"]


def test_the_gate_fails_against_a_better_champion(local_run: dict[str, Any]) -> None:
    """The gate component alone (kfp runs a component call locally): a champion far better than the model."""
    from kfp import local

    from components.benchmark import promotion_gate

    client = mlflow.MlflowClient(local_run["tracking"])
    # the champion's results are on the register run its version names (sanet.registry.client)
    register_run = client.get_model_version("sanet", "1").tags["register_run_id"]
    for name in BENCHMARKS:
        client.log_metric(register_run, f"{name}/mAP", 0.999)
    prefix = f"s3://{BUCKET}/{local_run['prefix']}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(local_run["root"] / "kfp-gate"))
    task = promotion_gate(
        params_file=str(local_run["params_file"]),
        overrides=[],
        train_uri=f"{prefix}/train",
        eval_uris=[f"{prefix}/eval/{name}" for name in BENCHMARKS],
    )
    assert task.outputs["Output"] is False
    decision = Path(task.outputs["decision"].path).read_text()
    assert "failed" in decision and "champion: v1" in decision.lower()


def test_the_study_components_share_one_study_between_parallel_workers(local_run: dict[str, Any]) -> None:
    """The hpo pipeline's components on one space, with its worker fan-out: two workers share a two-trial study."""
    from kfp import local

    from components.hpo import create_study, summarise_study
    from pipelines.hpo import study_workers

    prefix = f"s3://{BUCKET}/{local_run['prefix']}"
    common = {"params_file": str(local_run["params_file"]), "overrides": ["seed=1"], "space": "afe_layers"}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(local_run["root"] / "kfp-hpo"))
    study = create_study(**common, pipeline_run="hpo-test").outputs["Output"]
    assert study.startswith("sanet-") and "-afe_layers-" in study
    workers = study_workers(
        **common,
        workers=[0, 1],
        data_uri=f"{prefix}/data",
        masks_uri=f"{prefix}/masks",
        trials=2,
        pipeline_run="hpo-test",
        weights_uri="",
    )
    ran = sum(workers.output)
    assert len(workers.output) == 2 and ran in (2, 3)  # two racing workers may start one trial over the size
    summary = summarise_study(**common, work_uri=prefix, pipeline_run="hpo-test")
    assert study in Path(summary.outputs["summary"].path).read_text()
    overrides = summary.outputs["train_overrides"]
    assert overrides[0] == "seed=1" and overrides[1].startswith("model.afe.layers=")
    assert 0.0 <= summary.outputs["best_value"] <= 1.0
    keys = _keys(local_run["client"], f"{local_run['prefix']}/hpo/afe_layers/")
    assert f"{local_run['prefix']}/hpo/afe_layers/afe_layers.json" in keys
    assert sum(key.endswith(".png") for key in keys) == 4  # history, parameter slices, intermediate values, importances
    client = mlflow.MlflowClient(local_run["tracking"])
    runs = [run for e in client.search_experiments() for run in client.search_runs([e.experiment_id])]
    parents = {run.data.tags.get("mlflow.parentRunId") for run in runs} - {None}
    assert len(parents) == 1  # the study's parent run
    trials = [run for run in runs if run.data.tags.get("mlflow.parentRunId") in parents]
    assert len(trials) == ran


@pytest.mark.parametrize(
    ("condition", "values", "expected"),
    [
        ("inputs.parameter_values['pipelinechannel--promotion-gate-Output'] == true", {"promotion-gate": True}, True),
        ("inputs.parameter_values['pipelinechannel--promotion-gate-Output'] == true", {"promotion-gate": False}, False),
        ("!(inputs.parameter_values['pipelinechannel--g-Output'] == 'passed')", {"g": "passed"}, False),
        ("inputs.parameter_values['pipelinechannel--n-Output'] > 2 && true", {"n": 3}, True),
    ],
)
def test_the_local_condition_evaluator(condition: str, values: dict[str, Any], expected: bool) -> None:
    def resolve(channel: str) -> Any:
        return values.get(channel.removeprefix("pipelinechannel--").removesuffix("-Output"))

    assert evaluate(condition, resolve) is expected


def test_an_unresolvable_condition_fails_instead_of_skipping() -> None:
    with pytest.raises(ValueError, match="has no value"):
        evaluate("inputs.parameter_values['pipelinechannel--x-Output'] == true", lambda channel: None)


def test_print_is_the_real_one_after_local_runs(local_run: dict[str, Any]) -> None:
    """Later tests (and their captured output) see `print` unindented, whatever the parallel tasks left behind."""
    import builtins

    from kfp_local import _PRINT

    assert builtins.print is _PRINT
