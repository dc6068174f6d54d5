"""`dvc repro` end to end on a tiny profile, in a temporary copy of the repository.

The copy holds the repository's tracked files (dvc.yaml, params.yaml, the package sources DVC hashes as deps), a tiny
synthetic benchmark in place of the pinned one, and a params.yaml whose demo profile is shrunk to a one-epoch,
few-channel model. The test runs the real `dvc` and `sanet` executables, as `make demo` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from sanet.contracts.studies import SPACES
from sanet.data.benchmarks import BENCHMARKS

# The module fixture runs the whole tiny pipeline (one dvc repro, every stage a subprocess): on a slow or shared
# 2-core machine it outlasts the suite's 600 s per-test limit, which is meant for hung tests, not this one.
pytestmark = pytest.mark.timeout(1800)

BIN = Path(sys.executable).parent
STAGES = ["masks", "train", *(f"evaluate@{b}" for b in BENCHMARKS), "report", "register", *(f"hpo@{s}" for s in SPACES)]


def _repo_files(repo_root: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo_root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (repo_root / name).is_file()]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def pipeline(
    repo_root: Path, tiny_synth_root: Path, tiny_demo_params, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], subprocess.CompletedProcess[str]]:
    """The repository copy after one `dvc repro`: (copy, environment, the repro's output)."""
    copy = tmp_path_factory.mktemp("repo")
    for name in _repo_files(repo_root):
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / name, target)
    (copy / "data.dvc").unlink()  # pins the full synthetic benchmark; the copy gets the tiny one
    shutil.copytree(tiny_synth_root, copy / "data")
    tiny_demo_params(copy / "params.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "SANET_"))}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env["SANET_PIPELINE_RUN"] = "test-pipeline"
    for args in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        _run(args, copy, env)
    return copy, env, _run(["dvc", "repro"], copy, env)


def test_dvc_repro_runs_every_stage_and_writes_every_output(pipeline) -> None:
    copy, env, repro = pipeline
    for stage in STAGES:
        assert f"Running stage '{stage}'" in repro.stdout, stage
    assert (copy / "outputs/train/model.pt").is_file()
    for name in BENCHMARKS:
        metrics = json.loads((copy / "reports/eval" / name / "metrics.json").read_text())
        assert 0.0 <= metrics["mAP"] <= 1.0 and metrics["num_query"] > 0
        assert (copy / "reports/eval" / name / "ranked_list.png").is_file()
    report = (copy / "reports/benchmark.md").read_text()
    assert "synthetic" in report.splitlines()[0].lower() or "synthetic" in report[:400].lower()
    assert any((copy / "reports/figures").glob("*.png"))
    registry = json.loads((copy / "reports/registry.json").read_text())
    assert registry["decision"]["kind"] == "first" and "version" not in registry  # MLflow's bookkeeping: the sidecar
    assert json.loads((copy / "reports/registry.provenance.json").read_text())["version"] == 1
    for space in SPACES:
        study = json.loads((copy / "reports/hpo" / f"{space}.json").read_text())
        assert study["space"] == space and 0.0 <= study["best"]["value"] <= 1.0
        assert (copy / "reports/hpo" / f"{space}-history.png").is_file()
    # the lock records every stage; `dvc status` finds nothing to do
    lock = yaml.safe_load((copy / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    assert "up to date" in _run(["dvc", "status"], copy, env).stdout


def test_second_repro_does_nothing(pipeline) -> None:
    copy, env, _ = pipeline
    start = time.perf_counter()
    again = _run(["dvc", "repro"], copy, env)
    assert "Running stage" not in again.stdout
    assert time.perf_counter() - start < 60  # a generous bound for a loaded CI machine; `make demo` reports the time


def test_metrics_and_plots_are_declared_at_top_level(pipeline) -> None:
    copy, env, _ = pipeline
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], copy, env).stdout)
    files = next(iter(shown.values()))["data"]
    for name in BENCHMARKS:
        assert "rank1" in files[f"reports/eval/{name}/metrics.json"]["data"]
    assert "final" in files["outputs/train/metrics.json"]["data"]
    plots = json.loads(_run(["dvc", "plots", "show", "--json", "--split"], copy, env).stdout)
    assert {"Training losses", "Learning rate", "CMC curves", "reports/figures/cmc.png"} <= set(plots["data"])


def test_one_mlflow_run_per_stage_grouped_by_the_pipeline_run(pipeline) -> None:
    copy, _, _ = pipeline
    client = mlflow.MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sanet")
    runs = client.search_runs([experiment.experiment_id], "tags.pipeline_run = 'test-pipeline'")
    stages = sorted(run.data.tags["stage"] for run in runs)
    assert stages == sorted(["masks", "train", *["evaluate"] * len(BENCHMARKS), "report", "register"])
    assert all(run.info.status == "FINISHED" for run in runs)
    names = {run.info.run_name for run in runs}
    assert "evaluate partial_reid · sanet L2 k3 (demo)" in names
    evaluated = {run.data.tags["benchmark"] for run in runs if run.data.tags["stage"] == "evaluate"}
    assert evaluated == set(BENCHMARKS)
    for run in runs:
        if run.data.tags["stage"] == "evaluate":
            bench = run.data.tags["benchmark"]
            assert {f"{bench}/rank1", f"{bench}/mAP", f"{bench}/mINP"} <= set(run.data.metrics)
            assert run.data.params["model.afe.layers"] == "2" and run.data.params["loss.triplet_weight"] == "0.1"
    # the studies: one parent run per search space, each with its trial nested under it
    studies = client.get_experiment_by_name("sanet-hpo")
    hpo_runs = client.search_runs([studies.experiment_id])
    parents = {run.info.run_id: run for run in hpo_runs if "mlflow.parentRunId" not in run.data.tags}
    assert sorted(run.data.tags["hpo_space"] for run in parents.values()) == sorted(SPACES)
    trials = [run for run in hpo_runs if "mlflow.parentRunId" in run.data.tags]
    assert len(trials) == len(SPACES) and {run.data.tags["mlflow.parentRunId"] for run in trials} == set(parents)


def test_a_fresh_rerun_reproduces_the_lock_byte_for_byte(pipeline) -> None:
    """GitHub issue 16: a fresh clone's `dvc repro` (empty MLflow and Optuna stores, another pipeline run) writes
    every output with the bytes dvc.lock records; nothing run-dependent is in them."""
    copy, env, _ = pipeline
    before = (copy / "dvc.lock").read_text()
    for name in ("mlflow.db", "optuna.db", "mlruns", "outputs"):
        target = copy / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    _run(["dvc", "repro", "--force"], copy, env | {"SANET_PIPELINE_RUN": "test-pipeline-again"})
    assert (copy / "dvc.lock").read_text() == before
    assert "up to date" in _run(["dvc", "status"], copy, env).stdout


def test_changing_an_evaluation_param_reruns_only_the_evaluations_and_report(pipeline) -> None:
    copy, env, _ = pipeline
    status = _run(["dvc", "status", "--json"], copy, env)
    assert json.loads(status.stdout) == {}
    raw = yaml.safe_load((copy / "params.yaml").read_text())
    raw["evaluation"]["max_rank"] = 20
    (copy / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    changed = json.loads(_run(["dvc", "status", "--json"], copy, env).stdout)
    assert set(changed) == {f"evaluate@{b}" for b in BENCHMARKS}  # not the training: its outputs stay valid


def test_dvc_compares_commits_without_a_remote(pipeline) -> None:
    """Issue 18: the metrics, CMC curves and training history are committed outputs (cache: false), so DVC's
    comparison commands work across commits in a clone that has no DVC remote (and no cache of older commits)."""
    copy, env, _ = pipeline
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(["git", "checkout", "params.yaml"], copy, env)  # the previous test's change
    _run(["dvc", "repro"], copy, env)
    _run(["git", "add", "-A"], copy, env)
    _run([*git, "commit", "-qm", "results"], copy, env)
    committed = set(_run(["git", "ls-files"], copy, env).stdout.split())
    for name in BENCHMARKS:
        assert {f"reports/eval/{name}/metrics.json", f"reports/eval/{name}/cmc.csv"} <= committed
        assert f"reports/eval/{name}/ranked_list.png" not in committed  # the figures stay in DVC's cache
    assert {"outputs/train/metrics.json", "outputs/train/history.csv", "reports/masks_metrics.json"} <= committed
    # an experiment: a shorter CMC curve, committed
    raw = yaml.safe_load((copy / "params.yaml").read_text())
    raw["evaluation"]["max_rank"] = 20
    (copy / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(["dvc", "repro"], copy, env)
    _run(["git", "add", "-A"], copy, env)
    _run([*git, "commit", "-qm", "max_rank 20"], copy, env)
    shutil.rmtree(copy / ".dvc" / "cache")  # what a fresh clone without a remote has of older commits: nothing

    diff = json.loads(_run(["dvc", "metrics", "diff", "HEAD~1", "--all", "--json"], copy, env).stdout)
    assert "rank1" in diff["reports/eval/market1501/metrics.json"]
    plots = json.loads(_run(["dvc", "plots", "diff", "HEAD~1", "--json", "--split"], copy, env).stdout)
    (cmc,) = plots["data"]["CMC curves"]
    assert set(cmc["revisions"]) == {"workspace", "HEAD~1"}
    # the data plots compare; an older commit's images (cached outputs) are only there when its cache is
    errors = [json.dumps(error) for error in plots.get("errors") or []]
    assert all(".png" in error or "figures" in error for error in errors), errors
    params_diff = json.loads(_run(["dvc", "params", "diff", "HEAD~1", "--json"], copy, env).stdout)
    assert params_diff["params.yaml"]["evaluation.max_rank"]["new"] == 20
    shown = json.loads(_run(["dvc", "exp", "show", "--json", "-A"], copy, env).stdout)
    for revision in shown:
        assert not revision.get("error"), revision["error"]
    # `make exps`: only what differs between the last two commits, no dependency hashes, no "!" (unreadable) cells
    table = _run(["make", "-s", "exps", f"VENV={BIN.parent}"], copy, env | {"COLUMNS": "120"}).stdout
    assert "evaluation.max_rank" in table and "!" not in table and ".dir" not in table
    assert max(len(line) for line in table.splitlines()) <= 120
    summary = json.loads((copy / "reports/masks_metrics.json").read_text())
    assert len(summary) == 7 and 0.0 <= summary["visible/head"] <= 1.0
