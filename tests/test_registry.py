"""sanet.registry: the gate as a pure function, and register / promote / show against a real MLflow server.

The server (tests/mlflow_server.py) runs on PostgreSQL, as on a cluster. One module-scoped sequence of steps carries
its state from step to step, as successive `dvc repro` runs would: version 1 becomes the first champion, version 2
passes the gate (one benchmark drops exactly the tolerance), version 3 fails it (one benchmark drops beyond it) and
is then promoted by hand. The tests read the snapshots taken after each step. The model is logged once, by a
"training" run; every version registers that logged model. The fallback (the training run logged no model) and the
errors run on a sqlite store.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow_server import running_mlflow_server
from postgres import schema_url

from sanet.config import GateTolerance, Params
from sanet.engine.checkpoint import save_model_file
from sanet.infra.hashing import file_md5
from sanet.infra.tracking import TrackingError, run_tags, start_run
from sanet.registry.errors import RegistryError
from sanet.registry.gate import evaluate_gate
from sanet.registry.promotion import promote
from sanet.registry.stage import run_register
from sanet.registry.table import registry_table
from sanet.serving import log_feature_model

EXPERIMENT = "sanet-registry-test"
TOLERANCE = GateTolerance(mAP=0.01, rank1=0.01)
TRAIN_DATA_MD5 = "0123456789abcdef0123456789abcdef"
PIPELINE_RUN = "20261125-104500-test01"
REASON = "partial_reid mAP drop: the new gallery labels are correct, the old champion profited from an error"

# (rank1, mAP) per benchmark for the three registrations.
FIRST = {"market1501": (0.80, 0.60), "partial_reid": (0.50, 0.40)}
PASSES = {"market1501": (0.81, 0.61), "partial_reid": (0.49, 0.40)}  # partial_reid Rank-1: exactly -0.01
FAILS = {"market1501": (0.82, 0.62), "partial_reid": (0.49, 0.37)}  # partial_reid mAP: -0.03


# ---- the gate, without MLflow ------------------------------------------------------------------------------------


def _results(values: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    return {name: {"rank1": rank1, "mAP": mAP} for name, (rank1, mAP) in values.items()}


def test_without_a_champion_the_candidate_becomes_the_first() -> None:
    decision = evaluate_gate(_results(FIRST), None, TOLERANCE)
    assert (decision.passed, decision.kind, decision.comparisons) == (True, "first", [])


def test_improvements_pass_and_every_comparison_is_listed() -> None:
    decision = evaluate_gate(_results(FAILS), _results(FIRST), TOLERANCE)
    assert decision.passed is False  # partial_reid mAP 0.40 -> 0.37
    decision = evaluate_gate(_results(PASSES), _results(FIRST), TOLERANCE)
    assert (decision.passed, decision.kind) == (True, "passed")
    assert [(c.benchmark, c.metric) for c in decision.comparisons] == [
        ("market1501", "mAP"),
        ("market1501", "rank1"),
        ("partial_reid", "mAP"),
        ("partial_reid", "rank1"),
    ]
    market_map = decision.comparisons[0]
    assert (market_map.candidate, market_map.champion, market_map.tolerance, market_map.ok) == (0.61, 0.60, 0.01, True)
    assert market_map.delta == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("candidate", "passed"),
    [(0.49, True), (0.4899, False), (0.50, True), (0.70, True)],
    ids=["exactly-at-tolerance", "just-beyond", "unchanged", "improved"],
)
def test_a_drop_of_exactly_the_tolerance_passes_a_larger_one_fails(candidate: float, passed: bool) -> None:
    decision = evaluate_gate({"market1501": {"mAP": candidate}}, {"market1501": {"mAP": 0.50}}, TOLERANCE)
    assert decision.passed is passed
    assert decision.kind == ("passed" if passed else "failed")
    (comparison,) = decision.comparisons
    assert comparison.ok is passed and comparison.delta == pytest.approx(candidate - 0.50)


def test_one_regressing_benchmark_among_several_fails_and_is_named() -> None:
    champion = _results({"market1501": (0.80, 0.60), "partial_reid": (0.50, 0.40), "partial_ilids_p": (0.6, 0.5)})
    candidate = _results({"market1501": (0.90, 0.70), "partial_reid": (0.47, 0.41), "partial_ilids_p": (0.6, 0.5)})
    decision = evaluate_gate(candidate, champion, TOLERANCE)
    assert (decision.passed, decision.kind) == (False, "failed")
    assert "partial_reid Rank-1 dropped 3.0 points (50.0% -> 47.0%)" in decision.reason
    assert "market1501" not in decision.reason and "partial_ilids_p" not in decision.reason
    assert "sanet promote" in decision.reason
    assert [c.benchmark for c in decision.comparisons if not c.ok] == ["partial_reid"]


def test_a_benchmark_the_candidate_lacks_is_not_comparable() -> None:
    champion = _results({"market1501": (0.80, 0.60), "partial_reid": (0.50, 0.40)})
    decision = evaluate_gate(_results({"market1501": (0.90, 0.90)}), champion, TOLERANCE)
    assert decision.passed is False
    assert "not comparable" in decision.reason and "partial_reid" in decision.reason
    assert "sanet promote" in decision.reason
    missing = [c for c in decision.comparisons if c.benchmark == "partial_reid"]
    assert [(c.candidate, c.delta, c.ok) for c in missing] == [(None, None, False), (None, None, False)]


def test_a_benchmark_on_another_test_set_is_not_comparable() -> None:
    results = _results({"market1501": (0.80, 0.60)})
    same = evaluate_gate(results, results, TOLERANCE, {"market1501": "aaa"}, {"market1501": "aaa"})
    assert same.passed is True
    other = evaluate_gate(results, results, TOLERANCE, {"market1501": "aaa"}, {"market1501": "bbb"})
    assert other.passed is False
    assert "not comparable" in other.reason and "market1501" in other.reason and "sanet promote" in other.reason
    assert all(not c.ok for c in other.comparisons)


def test_a_benchmark_only_the_candidate_has_is_not_compared() -> None:
    candidate = _results({"market1501": (0.80, 0.60), "partial_reid": (0.10, 0.10)})
    decision = evaluate_gate(candidate, _results({"market1501": (0.80, 0.60)}), TOLERANCE)
    assert decision.passed is True
    assert {c.benchmark for c in decision.comparisons} == {"market1501"}


# ---- fixtures: the tiny network of tests/conftest.py, hand-written evaluations ---------------------------------------


def write_evaluations(
    eval_dir: Path, md5: str, results: Mapping[str, tuple[float, float]], test_md5: str = "test-set"
) -> Path:
    """`<eval_dir>/<benchmark>/{metrics.json,run.json,cmc.csv}` as `sanet evaluate` writes them."""
    for benchmark, (rank1, mAP) in results.items():
        folder = eval_dir / benchmark
        folder.mkdir(parents=True)
        cmc = [round(min(1.0, rank1 + 0.02 * k), 6) for k in range(10)]
        metrics = {
            "rank1": rank1,
            "rank3": cmc[2],
            "rank5": cmc[4],
            "rank10": cmc[9],
            "mAP": mAP,
            "mINP": round(mAP / 2, 6),
            "num_query": 12,
            "num_gallery": 40,
        }
        run = {
            "benchmark": benchmark,
            "synthetic": True,
            "variant": "sanet",
            "profile": "demo",
            "data_md5": f"{benchmark}-{test_md5}",
            "model_md5": md5,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "run.json").write_text(json.dumps(run))
        (folder / "cmc.csv").write_text("rank,cmc\n" + "".join(f"{k},{v}\n" for k, v in enumerate(cmc, 1)))
    return eval_dir


@pytest.fixture(scope="module")
def model_file(
    tiny_network_params: Callable[..., Params], tiny_network: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A small model file (180 MB: five part branches) that no tracking store knows (its training run is in none)."""
    params = tiny_network_params(uri="sqlite:///unused.db", experiment=EXPERIMENT)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    yield save_model_file(path, tiny_network, params, num_classes=7, meta={"train_run_id": "f" * 32})
    path.unlink(missing_ok=True)  # large: pytest keeps the temporary folders of the last runs


# ---- the sequence on a real MLflow server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("mlflow-server")
    with schema_url() as url, running_mlflow_server(url, workdir) as uri:
        yield uri
    shutil.rmtree(workdir / "artifacts", ignore_errors=True)  # the logged model: large


@dataclass
class Step:
    """What one registration step left: its result, the new version's tags, the aliases, registry.json and its
    sidecar (the version, aliases and runs: registry.json is a DVC output and holds none of them)."""

    result: Any
    tags: dict[str, str]
    version_run_id: str
    aliases: dict[str, str]
    record: dict[str, Any]
    text: str
    provenance: dict[str, Any]
    run: Any  # the register run: the full results, test-set md5s and the gate's numbers


@dataclass
class History:
    params: Params
    model_file: Path
    train_run_id: str
    steps: dict[str, Step]
    promotion: Any
    promoted_tags: dict[str, str]
    uris_before: tuple[str, str | None]
    uris_after: tuple[str, str | None]


def _uris() -> tuple[str, str | None]:
    return mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")


@pytest.fixture(scope="module")
def history(
    server: str,
    tiny_network_params: Callable[..., Params],
    tiny_network: torch.nn.Module,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[History]:
    """Train (log the model once), register three times, promote version 3: snapshots after each step."""
    root = tmp_path_factory.mktemp("registry")
    params = tiny_network_params(uri=server, experiment=EXPERIMENT)
    client = mlflow.MlflowClient(server, registry_uri=server)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        try:
            tags = run_tags(params, TRAIN_DATA_MD5, stage="train", extra={"pipeline_run": PIPELINE_RUN})
            with start_run(params, stage="train", run_name="train (registry test)", tags=tags) as run:
                meta = {"data_md5": TRAIN_DATA_MD5}  # what the weights are; the run is in the sidecar, as train does
                path = save_model_file(root / "model.pt", tiny_network, params, num_classes=7, meta=meta)
                sidecar = {"model_md5": file_md5(path), "train_run_id": run.info.run_id, "pipeline_run": PIPELINE_RUN}
                (root / "provenance.json").write_text(json.dumps(sidecar))
                log_feature_model(path, params)
        finally:
            mlflow.set_tracking_uri(None)  # start_run leaves MLflow's process-wide URI set
        md5 = file_md5(path)
        before = _uris()
        steps = {}
        for name, results in (("first", FIRST), ("passed", PASSES), ("failed", FAILS)):
            out = root / name / "registry.json"
            result = run_register(params, path, write_evaluations(root / name / "eval", md5, results), out)
            version = client.get_model_version("sanet", str(result.version))
            aliases = client.get_registered_model("sanet").aliases
            text = out.read_text()
            provenance = json.loads((out.parent / "registry.provenance.json").read_text())
            steps[name] = Step(
                result,
                dict(version.tags),
                version.run_id,
                dict(aliases),
                json.loads(text),
                text,
                provenance,
                client.get_run(result.run_id),
            )
        promotion = promote(params, 3, REASON)
        after = _uris()
        promoted_tags = dict(client.get_model_version("sanet", "3").tags)
        yield History(params, path, run.info.run_id, steps, promotion, promoted_tags, before, after)
    path.unlink(missing_ok=True)


def test_the_first_version_becomes_champion_with_its_results_as_tags(history: History, server: str) -> None:
    step = history.steps["first"]
    result = r = step.result
    assert (r.version, r.source, r.decision.kind, r.champion_version) == (1, "train_run", "first", 1)
    assert step.aliases == {"candidate": "1", "champion": "1"}
    assert step.version_run_id == history.train_run_id  # registered from the training run's logged model
    tags = step.tags  # a handful, readable in the registry's versions table
    assert set(tags) == {
        "gate",
        "gate_reason",
        "gate_champion_version",
        "git_sha",
        "data_md5",
        "model_md5",
        "register_run_id",
        "mean_rank1_holistic",
        "mean_rank1_partial",
    }
    assert tags["data_md5"] == TRAIN_DATA_MD5 and tags["register_run_id"] == result.run_id
    assert tags["model_md5"] == file_md5(history.model_file) and tags["git_sha"]
    assert (tags["gate"], tags["gate_champion_version"]) == ("first", "")
    assert (float(tags["mean_rank1_holistic"]), float(tags["mean_rank1_partial"])) == (0.80, 0.50)
    # the full results live on the register run the version names
    run = step.run
    assert run.data.metrics["market1501/rank1"] == 0.80 and run.data.metrics["partial_reid/mAP"] == 0.40
    assert run.data.metrics["partial_reid/mINP"] == 0.20
    assert run.data.tags["partial_reid/data_md5"] == "partial_reid-test-set"
    assert run.data.params["model.afe.layers"] == "2" and run.data.params["model.backbone"] == "resnet18"
    assert run.data.tags["gate_tolerance_mAP"] == "0.01" and run.data.tags["model_source"] == "train_run"
    record = step.record
    assert step.text == json.dumps(record, indent=2, sort_keys=True) + "\n"  # sorted keys, indent 2
    assert sorted(record) == ["benchmarks", "data_md5", "decision", "model_md5", "model_name"]  # nothing run-dependent
    assert (record["model_name"], record["data_md5"]) == ("sanet", TRAIN_DATA_MD5)
    assert record["model_md5"] == tags["model_md5"]
    assert record["decision"]["kind"] == "first" and record["decision"]["champion_model_md5"] is None
    assert record["benchmarks"]["market1501"]["metrics"]["mAP"] == 0.60
    provenance = step.provenance  # MLflow's bookkeeping and the runs: the sidecar
    assert (provenance["model_name"], provenance["version"], provenance["source"]) == ("sanet", 1, "train_run")
    assert provenance["source_uri"].startswith("models:/m-") and provenance["model_md5"] == record["model_md5"]
    # created by mlflow.register_model from the logged model: the model's page names its version
    logged = mlflow.MlflowClient(server).get_logged_model(provenance["source_uri"].removeprefix("models:/"))
    assert {"name": "sanet", "version": 1} in json.loads(logged.tags["mlflow.modelVersions"])
    train = history.train_run_id
    assert provenance["run_ids"] == {"register": result.run_id, "train": train, "model_source": train}
    assert provenance["aliases"] == {"candidate": 1, "champion": 1} and provenance["champion_version"] is None
    assert provenance["pipeline_run"] == PIPELINE_RUN and provenance["git_sha"]

    run = mlflow.MlflowClient(server).get_run(result.run_id)
    assert run.data.tags["stage"] == "register" and run.data.tags["pipeline_run"] == PIPELINE_RUN
    assert run.data.tags["mlflow.runName"] == f"register sanet ({history.params.profile})"
    assert run.data.metrics["gate/passed"] == 1.0 and run.data.metrics["market1501/rank1"] == 0.80
    artifacts = [a.path for a in mlflow.MlflowClient(server).list_artifacts(result.run_id)]
    assert {"registry.json", "registry.provenance.json"} <= set(artifacts)


def test_a_version_within_the_tolerance_takes_the_champion_alias(history: History) -> None:
    step = history.steps["passed"]
    assert (step.result.version, step.result.decision.kind, step.result.champion_version) == (2, "passed", 2)
    assert step.aliases == {"candidate": "2", "champion": "2"}
    assert step.tags["gate"] == "passed" and step.tags["gate_champion_version"] == "1"
    assert float(step.run.data.tags["gate/partial_reid/rank1_delta"]) == -0.01  # exactly the tolerance
    assert float(step.run.data.tags["gate/market1501/mAP_delta"]) == 0.01
    (exact,) = [
        c for c in step.record["decision"]["comparisons"] if (c["benchmark"], c["metric"]) == ("partial_reid", "rank1")
    ]
    assert exact == {
        "benchmark": "partial_reid",
        "metric": "rank1",
        "candidate": 0.49,
        "champion": 0.50,
        "delta": -0.01,
        "tolerance": 0.01,
        "ok": True,
    }


def test_a_regressing_version_stays_candidate_and_the_failure_is_recorded(history: History) -> None:
    step = history.steps["failed"]
    result = r = step.result
    assert (r.version, r.decision.kind, r.decision.passed, r.champion_version) == (3, "failed", False, 2)
    assert step.aliases == {"candidate": "3", "champion": "2"}
    assert step.tags["gate"] == "failed" and step.tags["gate_champion_version"] == "2"
    assert "partial_reid mAP dropped 3.0 points (40.0% -> 37.0%)" in step.tags["gate_reason"]
    assert float(step.run.data.tags["gate/partial_reid/mAP_delta"]) == -0.03
    decision = step.record["decision"]
    assert decision["kind"] == "failed" and decision["passed"] is False
    assert decision["champion_model_md5"] == step.tags["model_md5"]  # the champion, by its model (not its version)
    assert step.provenance["champion_version"] == 2
    assert decision["reason"] == step.tags["gate_reason"]
    assert decision["tolerance"] == {"mAP": 0.01, "rank1": 0.01}
    bad = [c for c in decision["comparisons"] if not c["ok"]]
    assert [(c["benchmark"], c["metric"], c["candidate"], c["champion"], c["delta"]) for c in bad] == [
        ("partial_reid", "mAP", 0.37, 0.40, -0.03)
    ]
    assert step.provenance["aliases"] == {"candidate": 3, "champion": 2}
    assert "gate failed: champion stays v2, v3 is the candidate" in result.summary()


def test_a_manual_promotion_moves_the_champion_and_records_why(history: History, server: str) -> None:
    promotion = history.promotion
    assert (promotion.version, promotion.previous_champion, promotion.reason) == (3, 2, REASON)
    tags = history.promoted_tags
    assert tags["promoted_by"] == "manual" and tags["promotion_reason"] == REASON
    assert tags["promoted_from_version"] == "2" and tags["promoted_by_user"] == getpass.getuser()
    promoted_at = datetime.fromisoformat(tags["promoted_at"])
    assert promoted_at.utcoffset() == timedelta(0)
    assert abs((datetime.now(promoted_at.tzinfo) - promoted_at).total_seconds()) < 600
    client = mlflow.MlflowClient(server, registry_uri=server)
    assert client.get_registered_model("sanet").aliases == {"candidate": "3", "champion": "3"}
    run = client.get_run(promotion.run_id)
    assert run.data.tags["stage"] == "promote" and run.data.tags["mlflow.runName"] == "promote v3"
    assert run.data.tags["promotion_reason"] == REASON and run.data.tags["promoted_from_version"] == "2"
    assert tags["promotion_run_id"] == promotion.run_id


def test_a_promotion_needs_a_reason_and_an_existing_version(history: History, server: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with pytest.raises(RegistryError, match="needs a non-empty reason"):
            promote(history.params, 2, "   ")
        with pytest.raises(RegistryError, match=r"no version 99; existing versions: v1, v2, v3"):
            promote(history.params, 99, "a reason")
    assert mlflow.MlflowClient(server, registry_uri=server).get_registered_model("sanet").aliases["champion"] == "3"


def test_the_table_shows_every_version_newest_first(history: History) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        text = registry_table(history.params)
    lines = text.splitlines()
    assert lines[0].startswith("sanet in http://127.0.0.1:") and "3 versions; champion v3, candidate v3" in lines[0]
    assert "market1501" in lines[1] and "partial_reid" in lines[1] and "partial_ilids_p" not in text
    assert lines[2].split()[:5] == ["version", "aliases", "created", "(UTC)", "gate"]
    rows = [line.split() for line in lines[3:]]
    assert [row[0] for row in rows] == ["v3", "v2", "v1"]
    assert rows[0][1] == "candidate,champion" and rows[0][4] == "failed+manual"
    assert rows[1][1] == "-" and rows[1][4] == "passed" and rows[2][4] == "first"
    assert rows[2][-4:] == ["80.0", "60.0", "50.0", "40.0"]  # market1501 Rank-1, mAP; partial_reid Rank-1, mAP
    assert rows[0][-4:] == ["82.0", "62.0", "49.0", "37.0"]
    assert len({len(line) for line in lines[2:]}) == 1  # fixed width: every row as wide as the header


def test_the_champion_serves_by_alias(
    history: History, server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    try:  # downloaded into tmp_path (MLflow's default is a temporary folder it never removes), deleted afterwards
        model = mlflow.pyfunc.load_model("models:/sanet@champion", dst_path=str(tmp_path))
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # the network is in memory now
    size = (3, history.params.input.height, history.params.input.width, 3)
    images = np.random.default_rng(0).integers(0, 256, size=size, dtype=np.uint8)
    out = model.predict(images)
    assert out["features"].dtype == np.float32 and out["features"].shape[:2] == (3, 5)
    assert out["visibility"].dtype == np.bool_ and out["visibility"].shape == (3, 5)
    assert np.isfinite(out["features"]).all()


def test_the_commands_leave_mlflows_process_wide_uri_alone(history: History) -> None:
    assert history.uris_after == history.uris_before
    assert history.uris_after[1] is None


# ---- a sqlite store: the fallback source and the errors -------------------------------------------------------------


@pytest.fixture
def sqlite_params(
    tiny_network_params: Callable[..., Params], tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Params]:
    """Params on a fresh sqlite store in tmp_path (the working directory: artifacts go to ./mlruns, removed after)."""
    shutil.copy(template_db, tmp_path / "store.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    yield tiny_network_params(uri=f"sqlite:///{tmp_path}/store.db", experiment=EXPERIMENT)
    shutil.rmtree(tmp_path / "mlruns", ignore_errors=True)


def test_without_a_logged_model_the_register_run_logs_it(
    sqlite_params: Params, model_file: Path, tmp_path: Path
) -> None:
    before = _uris()
    eval_dir = write_evaluations(tmp_path / "eval", file_md5(model_file), FIRST)
    result = run_register(sqlite_params, model_file, eval_dir, tmp_path / "reports" / "registry.json")
    assert _uris() == before
    r = result
    assert (r.version, r.source, r.decision.kind, r.champion_version) == (1, "register_run", "first", 1)
    client = mlflow.MlflowClient(sqlite_params.tracking.uri, registry_uri=sqlite_params.tracking.uri)
    version = client.get_model_version("sanet", "1")
    assert version.run_id == result.run_id  # the model was logged by the register run
    assert version.tags["data_md5"] == ""
    assert client.get_run(result.run_id).data.tags["model_source"] == "register_run"
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == result.run_id
    provenance = json.loads((result.path.parent / "registry.provenance.json").read_text())
    assert provenance["source"] == "register_run" and provenance["run_ids"]["train"] is None
    assert "sanet v1 registered from a model logged by this run; gate first" in result.summary()


def test_without_a_sidecar_the_training_run_is_found_by_the_model_md5(
    sqlite_params: Params, model_file: Path, tmp_path: Path
) -> None:
    """Only model.pt travels (a Kubeflow step; the file names no run: it is a DVC output): its md5 tag finds the run."""
    md5 = file_md5(model_file)
    tags = run_tags(sqlite_params, TRAIN_DATA_MD5, stage="train", extra={"model_md5": md5})
    try:
        with start_run(sqlite_params, stage="train", run_name="train (no sidecar)", tags=tags) as run:
            pass
    finally:
        mlflow.set_tracking_uri(None)  # start_run leaves MLflow's process-wide URI set
    assert not (model_file.parent / "provenance.json").exists()
    eval_dir = write_evaluations(tmp_path / "eval", md5, FIRST)
    result = run_register(sqlite_params, model_file, eval_dir, tmp_path / "registry.json")
    provenance = json.loads((tmp_path / "registry.provenance.json").read_text())
    assert provenance["run_ids"]["train"] == run.info.run_id and provenance["source"] == "register_run"
    assert json.loads(result.path.read_text())["data_md5"] == TRAIN_DATA_MD5  # the training run's tag


def test_an_evaluation_of_another_model_file_is_refused(
    sqlite_params: Params, model_file: Path, tmp_path: Path
) -> None:
    eval_dir = write_evaluations(tmp_path / "eval", file_md5(model_file), FIRST)
    run_json = eval_dir / "partial_reid" / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "model_md5": "0" * 32}))
    out = tmp_path / "registry.json"
    with pytest.raises(RegistryError, match=r"partial_reid evaluation measured another model file.*dvc repro"):
        run_register(sqlite_params, model_file, eval_dir, out)
    assert not out.exists()
    client = mlflow.MlflowClient(sqlite_params.tracking.uri, registry_uri=sqlite_params.tracking.uri)
    assert client.search_registered_models() == []


def test_missing_inputs_are_named_with_what_produces_them(
    sqlite_params: Params, model_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match=rf"no evaluation results at {tmp_path / 'nowhere'}: .*sanet evaluate"):
        run_register(sqlite_params, model_file, tmp_path / "nowhere", tmp_path / "registry.json")
    eval_dir = write_evaluations(tmp_path / "eval", "whatever", FIRST)
    with pytest.raises(RegistryError, match=rf"no model file at {tmp_path / 'model.pt'}: .*sanet train"):
        run_register(sqlite_params, tmp_path / "model.pt", eval_dir, tmp_path / "registry.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="no evaluation results in"):
        run_register(sqlite_params, model_file, tmp_path / "empty", tmp_path / "registry.json")


def test_show_and_promote_without_a_registered_model_say_how_to_create_it(sqlite_params: Params) -> None:
    with pytest.raises(RegistryError, match=r"no registered model 'sanet' in sqlite:///.*store\.db: run `dvc repro`"):
        registry_table(sqlite_params)
    with pytest.raises(RegistryError, match="no registered model 'sanet'"):
        promote(sqlite_params, 1, "a reason")


def test_an_unreachable_tracking_server_fails_fast_before_anything_is_written(
    tiny_network_params: Callable[..., Params], model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    params = tiny_network_params(uri=f"http://127.0.0.1:{port}", experiment=EXPERIMENT)
    eval_dir = write_evaluations(tmp_path / "eval", file_md5(model_file), FIRST)
    started = time.monotonic()
    for call in (
        lambda: run_register(params, model_file, eval_dir, tmp_path / "registry.json"),
        lambda: promote(params, 1, "a reason"),
        lambda: registry_table(params),
    ):
        with pytest.raises(TrackingError, match=rf"127\.0\.0\.1:{port} is unreachable"):
            call()
    assert time.monotonic() - started < 15
    assert not (tmp_path / "registry.json").exists()
