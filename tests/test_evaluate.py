"""`sanet evaluate` on a tiny synthetic benchmark: the files it writes, its MLflow run, its errors; and the
training's `--restart-stale` policy that the DVC stage relies on."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from sanet.cli import main
from sanet.config import load_params
from sanet.contracts.files import CHECKPOINT_FILE, MODEL_FILE
from sanet.data.benchmarks import build_benchmark
from sanet.engine.checkpoint import load_model_file
from sanet.engine.errors import CheckpointError
from sanet.engine.features import evaluate_benchmark
from sanet.evaluation.ranked_list import ranked_gallery
from sanet.evaluation.routing import image_routes, routing_summary
from sanet.evaluation.stage import run_evaluate
from sanet.infra.errors import EvaluationError
from sanet.train.stage import run_train


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SANET_PIPELINE_RUN", raising=False)
    monkeypatch.chdir(tmp_path)


def test_evaluate_writes_metrics_curves_pictures_and_one_mlflow_run(
    tiny_model, params_file: Path, tmp_path: Path
) -> None:
    model_file, overrides = tiny_model
    params = load_params(params_file, [*overrides, f"tracking.uri=sqlite:///{tmp_path / 'eval.db'}"])
    result = run_evaluate(params, "partial_ilids_p", model_file, out_dir=tmp_path / "eval", progress=False)

    out = tmp_path / "eval"
    assert {p.name for p in out.iterdir()} == {
        "metrics.json",
        "run.json",
        "cmc.csv",
        "ranked_list.png",
        "routing.json",
        "routing.png",
        "diagnostics.json",
        "diagnostics.png",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:6] == ["rank1", "rank3", "rank5", "rank10", "mAP", "mINP"]
    assert metrics["num_query"] == metrics["num_gallery"] == 2  # two identities, one probe and one gallery image each

    # the same numbers as evaluating the loaded model directly
    model, trained_params, meta = load_model_file(model_file)
    assert not {"train_run_id", "pipeline_run"} & set(meta)  # the model file names no run: a DVC output
    direct = evaluate_benchmark(
        model, build_benchmark("partial_ilids_p", params.data.root), trained_params, torch.device("cpu")
    )
    for key, value in direct.metrics.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6)
    cmc = np.loadtxt(out / "cmc.csv", delimiter=",", skiprows=1)
    assert cmc[0, 1] == pytest.approx(metrics["rank1"], abs=1e-6)
    assert np.all(np.diff(cmc[:, 1]) >= 0) and len(cmc) == params.evaluation.max_rank

    info = json.loads((out / "run.json").read_text())
    assert info["synthetic"] is True and info["variant"] == "sanet" and info["afe_layers"] == 2
    assert not {"pipeline_run", "mlflow_run_id", "git_sha", "evaluated_at"} & set(info)  # the folder: a DVC output
    assert "images_per_second" not in metrics
    training = json.loads((model_file.parent / "provenance.json").read_text())
    provenance = json.loads((tmp_path / "eval.provenance.json").read_text())  # the sidecar beside the folder
    assert provenance["pipeline_run"] == training["pipeline_run"]  # grouped with the training that made the model
    assert provenance["mlflow_run_id"] == result.run_id and provenance["train_run_id"] == training["train_run_id"]

    routing = json.loads((out / "routing.json").read_text())
    assert routing["adaptive"] is True and routing["layers"] == 2
    diagnostics = json.loads((out / "diagnostics.json").read_text())  # the tiny data has masks for Market-1501 only
    assert diagnostics["visibility"]["available"] is False and "sanet masks" in diagnostics["visibility"]["note"]
    assert set(routing["groups"]) == {"partial (query)", "holistic (gallery)"}
    for group in routing["groups"].values():
        assert sum(group["routes"].values()) == pytest.approx(1.0, abs=1e-3)

    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'eval.db'}").get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "evaluate" and run.data.tags["benchmark"] == "partial_ilids_p"
    assert run.data.tags["pipeline_run"] == training["pipeline_run"]
    assert run.data.metrics["partial_ilids_p/images_per_second"] > 0  # the speed: MLflow and the sidecar only
    assert run.data.metrics["partial_ilids_p/mAP"] == pytest.approx(metrics["mAP"])
    assert run.data.params["model.afe.layers"] == "2"  # the model's own settings, under the keys of --set
    # the run spans the work: it was open before the features were extracted and the results written
    assert run.info.start_time / 1000 <= (out / "cmc.csv").stat().st_mtime
    assert run.data.tags.get("mlflow.source.git.commit", "unknown") == run.data.tags["git_sha"].removesuffix("-dirty")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'eval.db'}")
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "evaluate/partial_ilids_p")}
    assert "evaluate/partial_ilids_p/ranked_list.png" in artifacts and "evaluate/partial_ilids_p/run.json" in artifacts


def test_evaluate_without_adaptive_routing_says_so(tiny_overrides, params_file: Path, tmp_path: Path) -> None:
    overrides = tiny_overrides(tmp_path, "train.epochs=1", "model.variant=global", "tracking.log_model=false")
    params = load_params(params_file, overrides)
    model_file = run_train(params, out_dir=tmp_path / "train", progress=False).model_file
    run_evaluate(params, "market1501", model_file, out_dir=tmp_path / "eval", progress=False)
    routing = json.loads((tmp_path / "eval" / "routing.json").read_text())
    assert routing["adaptive"] is False and "global" in routing["note"]
    # the figure exists for every variant (one set of DVC outputs): here it holds the note
    assert (tmp_path / "eval" / "routing.png").read_bytes().startswith(b"\x89PNG")


def test_evaluate_cli_errors_name_the_problem(
    tiny_model, params_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, overrides = tiny_model
    sets = ["--params", str(params_file), *(arg for o in overrides for arg in ("--set", o))]
    missing = tmp_path / "nowhere" / "model.pt"
    assert main(["evaluate", "--benchmark", "market1501", "--model", str(missing), *sets]) == 2
    assert str(missing) in capsys.readouterr().err
    with pytest.raises(EvaluationError, match="unknown benchmark 'market'"):
        run_evaluate(load_params(params_file, overrides), "market", missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    assert main(["evaluate", "--benchmark", "market1501", "--model", str(garbage), *sets]) == 2
    assert "garbage.pt" in capsys.readouterr().err
    assert not (Path("reports") / "eval").exists()  # nothing written


def test_ranked_gallery_applies_the_protocol_and_breaks_ties_by_index() -> None:
    distances = torch.tensor([0.5, 0.1, 0.1, 0.3, 0.2])
    g_pids = np.array([1, 1, 2, 3, 1])
    g_camids = np.array([0, 1, 1, 0, 0])
    # gallery 0 and 4 share the query's pid 1 and camera 0: left out, as in the metrics
    assert ranked_gallery(distances, 1, 0, g_pids, g_camids, top_k=10) == [1, 2, 3]
    assert ranked_gallery(distances, 1, 0, g_pids, g_camids, top_k=2) == [1, 2]


def test_routes_follow_the_chain_of_reached_cells() -> None:
    nr = -1
    # image 0: layer 1 at stride 16 goes down (2) -> layer 2 at stride 32 keeps (1) -> output at stride 32
    # image 1: layer 1 at stride 16 goes up (0) -> layer 2 at stride 8 goes down (2) -> output at stride 16
    routing = torch.tensor([[[nr, 2, nr], [nr, nr, 1]], [[nr, 0, nr], [2, nr, nr]]])
    assert image_routes(routing).tolist() == [[1, 2, 2], [1, 0, 1]]
    summary = routing_summary(routing, {"a": np.array([True, False]), "b": np.array([False, True])})
    assert summary["groups"]["a"]["routes"] == {"16>32>32": 1.0}
    assert summary["groups"]["b"]["mean_stride"] == [16.0, 8.0, 16.0]
    with pytest.raises(ValueError, match="exactly one cell"):
        image_routes(torch.tensor([[[0, 1, nr], [nr, 1, nr]]]))


def test_restart_stale_resumes_unfinished_and_replaces_finished_or_foreign_checkpoints(
    tiny_overrides,
    params_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = load_params(params_file, tiny_overrides(tmp_path, "tracking.log_model=false"))
    out = tmp_path / "train"
    first = run_train(params, out_dir=out, progress=False, stop_after_steps=2)
    assert first.interrupted
    resumed = run_train(params, out_dir=out, progress=False, restart_stale=True)
    assert resumed.resumed_from == str(out / CHECKPOINT_FILE) and not resumed.interrupted
    assert (out / MODEL_FILE).is_file()

    capsys.readouterr()
    again = run_train(params, out_dir=out, progress=False, restart_stale=True)  # finished: a new training
    assert again.resumed_from is None and "its training had finished" in capsys.readouterr().out

    other = load_params(params_file, tiny_overrides(tmp_path, "tracking.log_model=false", "train.lr=0.05"))
    with pytest.raises(CheckpointError, match="other training parameters"):
        run_train(other, out_dir=out, progress=False, stop_after_steps=1)
    replaced = run_train(other, out_dir=out, progress=False, restart_stale=True, stop_after_steps=1)
    assert replaced.resumed_from is None and "other training parameters" in capsys.readouterr().out
