"""The Kubeflow pipelines as compiled: golden YAML, GPU requests, shared memory, secrets, caching, control flow.

Also `sanet kfp compile` and `sanet kfp submit` (against a fake Kubeflow Pipelines API that records requests).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from paths import REPO_ROOT

from components.image import DEFAULT_IMAGE
from sanet.cli import main
from sanet.cluster.kubeflow import PIPELINES, compile_pipelines, data_version

BIN = Path(sys.executable).parent
LOGGING_STEPS = ("part-masks", "train-model", "evaluate-model", "paper-report", "promotion-gate", "register-model")
STUDY_STEPS = ("create-study", "hpo-worker", "summarise-study")


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("compiled")
    return {path.stem: path for path in compile_pipelines(REPO_ROOT, out)}


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of every DAG (root, sub-pipelines, loops, conditions), keyed by `<dag>/<task>`."""
    dags = {"root": spec["root"]} | {name: comp for name, comp in spec["components"].items() if "dag" in comp}
    return {f"{dag}/{name}": task for dag, comp in dags.items() for name, task in comp["dag"]["tasks"].items()}


def _executor(spec: dict[str, Any], task: dict[str, Any]) -> str | None:
    return spec["components"][task["componentRef"]["name"]].get("executorLabel")


def _step(label: str) -> str:
    """`exec-train-model-2` -> `train-model`."""
    name = label.removeprefix("exec-")
    return name.rsplit("-", 1)[0] if name[-1].isdigit() and name.rsplit("-", 1)[-1].isdigit() else name


@pytest.mark.parametrize("name", list(PIPELINES))
def test_checked_in_yaml_is_what_the_code_compiles_to(compiled: dict[str, Path], name: str) -> None:
    checked_in = REPO_ROOT / "pipelines" / f"{name}.yaml"
    assert checked_in.read_text() == compiled[name].read_text(), (
        f"pipelines/{name}.yaml is stale: run `sanet kfp compile` and commit the result"
    )


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_component_runs_the_project_image_without_installing_anything(
    compiled: dict[str, Path], name: str
) -> None:
    spec, _ = _load(compiled[name])
    for label, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        expected = f"{DEFAULT_IMAGE}-masks" if _step(label) == "part-masks" else DEFAULT_IMAGE
        assert container["image"] == expected, label
        command = " ".join(container["command"])
        assert "pip install" not in command and "python3 -m kfp.dsl.executor_main" in command, label


def test_training_requests_the_gpus_parameter_and_shared_memory(compiled: dict[str, Path]) -> None:
    spec, platform = _load(compiled["benchmark"])
    resources = spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
    (mount,) = platform["exec-train-model"]["emptyDirMounts"]
    assert mount == {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"}
    train = next(task for key, task in _tasks(spec).items() if key.endswith("/train-model"))
    assert train["inputs"]["parameters"]["gpus"] == {"componentInputParameter": "gpus"}  # torchrun's nproc
    assert train["retryPolicy"]["maxRetryCount"] == 2  # a retried pod resumes from the uploaded checkpoint
    assert spec["root"]["inputDefinitions"]["parameters"]["gpus"]["defaultValue"] == 4


@pytest.mark.parametrize("name", list(PIPELINES))
def test_secrets_give_every_step_the_stores_it_uses(compiled: dict[str, Path], name: str) -> None:
    _, platform = _load(compiled[name])
    for label, config in platform.items():
        secrets = {item["secretName"]: item for item in config.get("secretAsEnv", [])}
        env = {key["envVar"] for item in secrets.values() for key in item["keyToEnv"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= env, label
        step = _step(label)
        assert ("MLFLOW_TRACKING_URI" in env) == (step != "fetch-data"), label
        assert ("SANET_HPO_STORAGE" in env) == (step in STUDY_STEPS), label
        if step in ("train-model", "evaluate-model", "hpo-worker", "part-masks"):
            assert config["emptyDirMounts"][0]["mountPath"] == "/dev/shm", label
    secret_names = {item["secretName"] for config in platform.values() for item in config.get("secretAsEnv", [])}
    assert secret_names == (
        {"sanet-s3", "sanet-mlflow", "sanet-optuna"} if name == "hpo" else {"sanet-s3", "sanet-mlflow"}
    )


def test_benchmark_pipeline_evaluates_in_parallel_and_registers_behind_the_gate(compiled: dict[str, Path]) -> None:
    spec, _ = _load(compiled["benchmark"])
    tasks = _tasks(spec)
    loops = [task for task in tasks.values() if "parameterIterator" in task]
    assert len(loops) == 1 and loops[0]["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--benchmarks"
    conditions = [task for task in tasks.values() if "triggerPolicy" in task]
    assert [c["triggerPolicy"]["condition"] for c in conditions] == [
        "inputs.parameter_values['pipelinechannel--promotion-gate-Output'] == true"
    ]
    guarded = spec["components"][conditions[0]["componentRef"]["name"]]["dag"]["tasks"]
    assert [_executor(spec, task) for task in guarded.values()] == ["exec-register-model"]
    order = {key.split("/")[-1]: task.get("dependentTasks", []) for key, task in tasks.items()}
    assert order["part-masks"] == ["fetch-data"]
    assert "part-masks" in order["train-model"]
    assert set(order["paper-report"]) == {"sanet-evaluate-all", "train-model", "fetch-data"}
    assert "paper-report" in order["promotion-gate"]


def test_hpo_pipeline_runs_a_study_per_space_with_uncached_gpu_workers(compiled: dict[str, Path]) -> None:
    spec, platform = _load(compiled["hpo"])
    tasks = _tasks(spec)
    creates = [
        task for task in tasks.values() if _executor(spec, task) and _step(_executor(spec, task)) == "create-study"
    ]
    spaces = sorted(task["inputs"]["parameters"]["space"]["runtimeValue"]["constant"] for task in creates)
    assert spaces == ["afe_kernel", "afe_layers", "triplet_weight"]
    workers = [
        task for task in tasks.values() if _executor(spec, task) and _step(_executor(spec, task)) == "hpo-worker"
    ]
    assert len(workers) == 3
    for task in tasks.values():
        label = _executor(spec, task)
        if label and _step(label) in STUDY_STEPS:
            assert task["cachingOptions"] == {}, label  # enableCache absent: caching off
    for label, executor in spec["deploymentSpec"]["executors"].items():
        if _step(label) == "hpo-worker":
            assert executor["container"]["resources"]["accelerator"]["resourceCount"] == "1"
            assert {s["secretName"] for s in platform[label]["secretAsEnv"]} >= {"sanet-optuna"}
    loops = [task for task in tasks.values() if "parameterIterator" in task]
    assert (
        sum(loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--workers" for loop in loops) == 3
    )
    best_trainings = [t for t in tasks.values() if _executor(spec, t) and _step(_executor(spec, t)) == "train-model"]
    for task in best_trainings:  # trained with the study's best settings
        assert (
            task["inputs"]["parameters"]["overrides"]["taskOutputParameter"]["outputParameterKey"] == "train_overrides"
        )


def test_compile_command_writes_yaml_for_another_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = "registry.example.com/team/sanet-bench:1.2.3"
    assert main(["kfp", "compile", "--image", image, "--out", str(tmp_path), "--root", str(REPO_ROOT)]) == 0
    spec, _ = _load(tmp_path / "benchmark.yaml")
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {image, f"{image}-masks"}
    assert "compiled" in capsys.readouterr().out


def test_pipeline_modules_compile_themselves(tmp_path: Path) -> None:
    """`python -m pipelines.benchmark` (the kubeflow/pipelines samples' convention) writes the YAML beside it."""
    copy = tmp_path / "repo"
    for folder in ("components", "pipelines"):
        for file in (REPO_ROOT / folder).glob("*.py"):
            (copy / folder).mkdir(parents=True, exist_ok=True)
            (copy / folder / file.name).write_text(file.read_text())
    done = subprocess.run([sys.executable, "-m", "pipelines.benchmark"], cwd=copy, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (copy / "pipelines/benchmark.yaml").read_text() == (REPO_ROOT / "pipelines/benchmark.yaml").read_text()


def test_submit_to_an_unreachable_host_stops_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["kfp", "submit", "--host", "http://127.0.0.1:9", "--work-root", "s3://b/runs", "--data-prefix", "s3://b/d"]
    )
    assert code == 2
    assert "Kubeflow Pipelines API at http://127.0.0.1:9 does not answer" in capsys.readouterr().err


class _FakeKfp(BaseHTTPRequestHandler):
    """Enough of the KFP v2beta1 REST API for kfp.Client to create an experiment and a run; records the bodies."""

    calls: ClassVar[list[tuple[str, str, Any]]] = []

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._reply({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiments": [], "total_size": 0})
        else:
            self._reply({})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.calls.append(("POST", self.path, body))
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name", "")})
        elif self.path.startswith("/apis/v2beta1/runs"):
            self._reply({"run_id": "run-42", "display_name": body.get("display_name", ""), "experiment_id": "exp-1"})
        else:
            self._reply({})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_kfp() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfp)
    _FakeKfp.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _FakeKfp.calls
    finally:
        server.shutdown()
        server.server_close()


def test_submit_sends_the_compiled_pipeline_with_this_checkouts_data_version(
    fake_kfp: tuple[str, list[tuple[str, str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, calls = fake_kfp
    code = main(
        ["kfp", "submit", "--host", host, "--experiment", "partial-reid", "--work-root", "s3://team/runs",
         "--dvc-remote", "s3://team/dvcstore", "--gpus", "8", "--override", "profile=paper",
         "--override", "train.epochs=60", "--weights", "s3://team/weights", "--root", str(REPO_ROOT)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (run,) = [body for method, path, body in calls if method == "POST" and path.startswith("/apis/v2beta1/runs")]
    md5 = yaml.safe_load((REPO_ROOT / "data.dvc").read_text())["outs"][0]["md5"]
    assert run["runtime_config"]["parameters"] == {
        "data_source": "s3://team/dvcstore",
        "data_md5": md5,
        "work_root": "s3://team/runs",
        "overrides": ["profile=paper", "train.epochs=60"],
        "gpus": 8,
        "weights_uri": "s3://team/weights",
    }
    pipeline_spec = run["pipeline_spec"]["pipeline_spec"]
    assert pipeline_spec["pipelineInfo"]["name"] == "sanet-benchmark"
    images = {e["container"]["image"] for e in pipeline_spec["deploymentSpec"]["executors"].values()}
    assert images == {DEFAULT_IMAGE, f"{DEFAULT_IMAGE}-masks"}
    assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]  # GPUs, secrets, /dev/shm go along
    assert run["experiment_id"] == "exp-1"
    out = capsys.readouterr().out
    assert "started run run-42" in out and f"{host}/#/runs/details/run-42" in out


def test_data_version_reads_data_dvc_and_the_default_remote(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc/config").write_text("[core]\n    remote = team\n['remote \"team\"']\n    url = s3://team/dvc\n")
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    assert data_version(tmp_path) == ("s3://team/dvc", "0123456789abcdef0123456789abcdef.dir")
    assert data_version(tmp_path, "s3://other/x")[0] == "s3://other/x"
