"""sanet.infra.tracking: the pre-flight check, flat param names, tags, and runs recorded in a temporary sqlite store."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest

from sanet.config import Params, resolve
from sanet.infra.hashing import files_md5
from sanet.infra.tracking import (
    MetricLogger,
    TrackingError,
    check_tracking_uri,
    flat_params,
    git_sha,
    run_tags,
    start_run,
    tracking_uri,
)


def _params(**tracking: object) -> Params:
    return resolve({"tracking": {"system_metrics": False, **tracking}})


# ---- stores ----------------------------------------------------------------------------------------------------


@pytest.fixture
def store(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh sqlite tracking store in tmp_path, selected through MLFLOW_TRACKING_URI; artifacts in tmp_path."""
    shutil.copy(template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root with a sqlite store is ./mlruns
    yield uri
    mlflow.set_tracking_uri(None)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 503
        body = b"OK" if status == 200 else b"down"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def health_server() -> Iterator[str]:
    """An HTTP stub: /health answers 200, any other path (e.g. /down/health) 503."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- tracking_uri and the pre-flight check ---------------------------------------------------------------------


def test_tracking_uri_environment_wins_over_params(monkeypatch: pytest.MonkeyPatch) -> None:
    params = _params(uri="sqlite:///from-params.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking_uri(params) == "http://tracking:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert tracking_uri(params) == "sqlite:///from-params.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(params) == "sqlite:///from-params.db"


def test_unreachable_http_server_fails_fast_naming_the_uri() -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.perf_counter()
    with pytest.raises(TrackingError, match="unreachable") as info:
        check_tracking_uri(uri, timeout=2.0)
    assert time.perf_counter() - started < 2.0 + 2
    assert uri in str(info.value)


def test_http_server_that_never_answers_fails_within_the_timeout() -> None:
    with socket.socket() as listener:  # the kernel accepts the connection; nobody ever reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.perf_counter()
        with pytest.raises(TrackingError, match="no answer within 1 s") as info:
            check_tracking_uri(uri, timeout=1.0)
    assert time.perf_counter() - started < 1.0 + 2
    assert uri in str(info.value)


def test_http_server_answering_health_passes_and_an_error_status_fails(health_server: str) -> None:
    check_tracking_uri(health_server, timeout=2.0)
    check_tracking_uri(health_server + "/", timeout=2.0)
    with pytest.raises(TrackingError, match="HTTP 503"):
        check_tracking_uri(health_server + "/down", timeout=2.0)


def test_http_password_is_not_printed() -> None:
    uri = f"http://user:s3cret@127.0.0.1:{_closed_port()}"
    with pytest.raises(TrackingError) as info:
        check_tracking_uri(uri, timeout=1.0)
    assert "s3cret" not in str(info.value)
    assert "user:***@127.0.0.1" in str(info.value)


def test_sqlite_store_in_a_new_folder_passes_and_the_folder_is_created(tmp_path: Path) -> None:
    check_tracking_uri(f"sqlite:///{tmp_path}/runs/deeper/mlflow.db")
    assert (tmp_path / "runs" / "deeper").is_dir()


def test_sqlite_store_whose_folder_cannot_exist_fails(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/a_file/mlflow.db"
    with pytest.raises(TrackingError, match="cannot create the folder") as info:
        check_tracking_uri(uri)
    assert uri in str(info.value)


def test_sqlite_store_that_is_not_a_database_fails(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_text("hello")
    with pytest.raises(TrackingError, match="not a SQLite database"):
        check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")


def test_existing_sqlite_store_passes(template_db: Path) -> None:
    check_tracking_uri(f"sqlite:///{template_db}")


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "./mlruns", "mlruns", "/abs/mlruns"])
def test_file_store_is_refused_with_the_sqlite_suggestion(uri: str) -> None:
    with pytest.raises(TrackingError, match=r"sqlite:///mlflow\.db") as info:
        check_tracking_uri(uri)
    assert uri in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("pg8000") is not None, reason="pg8000 is installed")
def test_missing_database_driver_is_named_with_its_package() -> None:
    with pytest.raises(TrackingError, match=r"driver 'pg8000' is not installed \(pip install pg8000\)"):
        check_tracking_uri("postgresql+pg8000://mlflow:secret@127.0.0.1:5432/mlflow")


def test_the_local_postgresql_server_passes_the_check(postgres_url: str) -> None:
    check_tracking_uri(postgres_url)  # the store a cluster uses: psycopg is installed and the server answers


def test_databricks_is_left_to_mlflow() -> None:
    check_tracking_uri("databricks")  # no network, no error: MLflow handles its own schemes


# ---- params and tags -------------------------------------------------------------------------------------------


def test_params_are_logged_under_the_dotted_keys_users_type() -> None:
    params = resolve({"model": {"afe": {"layers": 3, "kernel": 5}}, "loss": {"triplet_weight": 0.2}})
    flat = flat_params(params)
    assert flat["model.afe.layers"] == 3
    assert flat["model.afe.kernel"] == 5
    assert flat["loss.triplet_weight"] == 0.2
    assert flat["train.lr"] == params.train.lr
    assert flat["model.variant"] == "sanet"
    assert flat["seed"] == 0 and flat["profile"] == "paper"
    assert flat["input.height"] == 384 and flat["masks.height"] == params.masks.height
    assert flat["train.batch_size"] == 64 and flat["evaluation.batch_size"] == params.evaluation.batch_size
    assert flat["train.milestones"] == "[60, 120]"
    # every name is a key `--set` accepts, with the value it sets
    for name in ("model.afe.layers", "train.lr", "augment.partial.crop", "evaluation.rerank.k1"):
        override = resolve({}, [f"{name}={flat[name]}"])
        assert flat_params(override)[name] == flat[name]


def test_flat_params_are_unique_scalar_and_deterministic() -> None:
    params = resolve({})
    flat = flat_params(params)
    assert list(flat) == list(flat_params(resolve({})))  # same order every time
    assert len(set(flat)) == len(flat)
    assert all(isinstance(v, str | int | float | bool) for v in flat.values())
    assert all(len(str(v)) <= 6000 for v in flat.values())
    # sections that do not change a result are not logged
    assert not any(name.startswith(("synth.", "tracking.", "registry.", "hpo.", "profiles.")) for name in flat)


def test_run_tags_carry_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANET_PIPELINE_RUN", "pipe-42")
    tags = run_tags(resolve({"model": {"variant": "hpnet"}}), "abc123", "train", extra={"device": "cpu"})
    assert tags["data_md5"] == "abc123"
    assert tags["variant"] == "hpnet"
    assert tags["stage"] == "train"
    assert tags["profile"] == "paper"
    assert tags["pipeline_run"] == "pipe-42"
    assert tags["device"] == "cpu"
    assert tags["git_sha"]
    if tags["git_sha"] != "unknown":  # MLflow's own source tag: the clean sha, the UI links it
        assert tags["mlflow.source.git.commit"] == tags["git_sha"].removesuffix("-dirty")
        assert tags["git_dirty"] == str(tags["git_sha"].endswith("-dirty")).lower()
    monkeypatch.delenv("SANET_PIPELINE_RUN")
    assert "pipeline_run" not in run_tags(resolve({}), "abc123", "train")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_sha_is_the_head_commit_and_marks_a_dirty_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one")
    (repo / "dvc.lock").write_text("schema: '2.0'")
    _git(repo, "add", "a.txt", "dvc.lock")
    _git(repo, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert git_sha(repo) == head.stdout.strip()
    assert len(git_sha(repo)) == 40
    (repo / "untracked.txt").write_text("ignored by the dirty check")
    assert not git_sha(repo).endswith("-dirty")
    (repo / "dvc.lock").write_text("stages: {}")  # rewritten by `dvc repro` between stages: not a code change
    assert not git_sha(repo).endswith("-dirty")
    # committed pipeline outputs (metrics, registry record) that `dvc repro` removes and rewrites while it runs
    for output in ("reports/eval/market1501/metrics.json", "reports/registry.json", "outputs/train/history.csv"):
        (repo / output).parent.mkdir(parents=True, exist_ok=True)
        (repo / output).write_text("{}")
        _git(repo, "add", output)
    _git(repo, "commit", "-q", "-m", "outputs")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    (repo / "reports/registry.json").unlink()
    (repo / "reports/eval/market1501/metrics.json").write_text('{"rank1": 1}')
    assert git_sha(repo) == head.stdout.strip()
    (repo / "a.txt").write_text("two")
    assert git_sha(repo) == head.stdout.strip() + "-dirty"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_sha(outside) == "unknown"


def test_files_md5_identifies_names_and_content_not_location_or_order(tmp_path: Path) -> None:
    def tree(root: Path, files: dict[str, bytes]) -> list[Path]:
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return [root / name for name in files]

    files = {"train/0001_c1.jpg": b"\xff\xd8one", "train/0002_c2.jpg": b"\xff\xd8two"}
    first = tree(tmp_path / "a", files)
    second = tree(tmp_path / "b", files)
    reference = files_md5(first, tmp_path / "a")
    assert reference == files_md5(reversed(second), tmp_path / "b")  # another root, another order
    assert len(reference) == 32
    (tmp_path / "b" / "train/0002_c2.jpg").write_bytes(b"\xff\xd8tw0")
    assert files_md5(second, tmp_path / "b") != reference  # one changed byte
    renamed = tree(tmp_path / "c", {"train/0001_c1.jpg": b"\xff\xd8one", "train/0003_c2.jpg": b"\xff\xd8two"})
    assert files_md5(renamed, tmp_path / "c") != reference  # same bytes, another name
    with pytest.raises(ValueError, match="not under the data root"):
        files_md5(first, tmp_path / "b")


# ---- runs ------------------------------------------------------------------------------------------------------


def _run(run_id: str) -> mlflow.entities.Run:
    return mlflow.MlflowClient().get_run(run_id)


def test_start_run_records_params_tags_and_success(store: str) -> None:
    params = _params(experiment="bench")
    tags = run_tags(params, "d41d8cd9", "train", extra={"world_size": "1"})
    with start_run(params, stage="train", run_name="train sanet", tags=tags) as active:
        assert mlflow.active_run().info.run_id == active.info.run_id
    run = _run(active.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train sanet"
    experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == "bench"
    # MLflow 3's UI opens it in the model-training view, not the GenAI one
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.params == {k: str(v) for k, v in flat_params(params).items()}
    assert {k: run.data.tags[k] for k in tags} == tags
    assert run.data.tags["stage"] == "train"
    assert mlflow.active_run() is None


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RuntimeError("diverged"), "FAILED"),
        (KeyboardInterrupt(), "KILLED"),
        (SystemExit(3), "KILLED"),
        (SystemExit(0), "FINISHED"),
    ],
)
def test_start_run_marks_how_the_block_ended(store: str, error: BaseException, status: str) -> None:
    with pytest.raises(type(error)), start_run(_params(), stage="train", run_name="r", tags={}) as active:
        raise error
    assert _run(active.info.run_id).info.status == status
    assert mlflow.active_run() is None


def test_start_run_uses_params_uri_and_leaves_the_environment_alone(
    tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    shutil.copy(template_db, tmp_path / "own.db")
    params = _params(uri=f"sqlite:///{tmp_path}/own.db")
    try:
        with start_run(params, stage="evaluate", run_name="r", tags={}) as active:
            pass
        assert "MLFLOW_TRACKING_URI" not in os.environ  # a later run's tracking.uri still counts
        runs = mlflow.MlflowClient(f"sqlite:///{tmp_path}/own.db").search_runs([active.info.experiment_id])
        assert [r.info.run_id for r in runs] == [active.info.run_id]
    finally:
        mlflow.set_tracking_uri(None)


def test_resuming_a_run_keeps_its_params_and_notes_changes(store: str) -> None:
    params = _params()
    with start_run(params, stage="train", run_name="r", tags={"attempt": "1"}) as first:
        pass
    changed = resolve({"tracking": {"system_metrics": False}, "train": {"log_every": 5}})
    with start_run(changed, stage="train", run_name="r", tags={"attempt": "2"}, run_id=first.info.run_id) as again:
        assert again.info.run_id == first.info.run_id
    run = _run(first.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.log_every"] == "10"  # MLflow params are write-once
    assert run.data.tags["params_changed_on_resume"] == "train.log_every: 10 -> 5"
    assert run.data.tags["attempt"] == "2"


def test_nested_run_goes_under_its_parent(store: str) -> None:
    params = _params()
    with start_run(params, stage="hpo", run_name="study", tags={}) as parent:
        with start_run(params, stage="train", run_name="trial 0", tags={}, experiment="hpo", nested=True) as child:
            pass
        assert mlflow.active_run().info.run_id == parent.info.run_id
    run = _run(child.info.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.info.status == "FINISHED" and _run(parent.info.run_id).info.status == "FINISHED"
    assert mlflow.MlflowClient().get_experiment(run.info.experiment_id).name == "hpo"


def test_system_metrics_follow_the_configured_interval(store: str) -> None:
    params = _params(system_metrics=True, system_metrics_interval=0.1)
    with start_run(params, stage="train", run_name="r", tags={}) as active:
        time.sleep(0.5)
    assert any(key.startswith("system/cpu") for key in _run(active.info.run_id).data.metrics)


def test_metric_logger_batches_until_flush(store: str) -> None:
    client = mlflow.MlflowClient()
    with start_run(_params(), stage="train", run_name="r", tags={}) as active:
        logger = MetricLogger(flush_every=1000, max_delay=3600)
        for step in range(5):
            logger.log({"train/loss": 1.0 / (step + 1), "market1501/mAP": step / 10}, step)
        assert client.get_run(active.info.run_id).data.metrics == {}  # still buffered
        logger.close()
        history = client.get_metric_history(active.info.run_id, "train/loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2, 3, 4]
        assert client.get_run(active.info.run_id).data.metrics["market1501/mAP"] == pytest.approx(0.4)
        small = MetricLogger(flush_every=3, max_delay=3600)
        small.log({"a": 1.0, "b": 2.0}, 0)
        assert "a" not in client.get_run(active.info.run_id).data.metrics
        small.log({"c": 3.0}, 0)  # the third value fills the batch
        assert {"a", "b", "c"} <= set(client.get_run(active.info.run_id).data.metrics)
        MetricLogger(flush_every=1000, max_delay=0).log({"d": 4.0}, 0)  # old buffer: flushed at once
        assert "d" in client.get_run(active.info.run_id).data.metrics


def test_metric_logger_needs_a_run(store: str) -> None:
    with pytest.raises(TrackingError, match="active MLflow run"):
        MetricLogger()


def test_more_params_than_one_mlflow_batch_are_all_logged(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow takes at most 100 params per batch; the schema logs 100 today, so one more key must not break runs."""
    import sanet.infra.tracking as tracking

    monkeypatch.setattr(tracking, "_MAX_PARAMS_PER_BATCH", 7)
    params = _params()
    with start_run(params, stage="train", run_name="r", tags={}) as active:
        pass
    assert _run(active.info.run_id).data.params == {k: str(v) for k, v in flat_params(params).items()}
