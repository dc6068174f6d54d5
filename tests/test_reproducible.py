"""The DVC outputs are a deterministic function of the code, the parameters and the data (GitHub issue 16, point 5).

Each stage function runs twice on the same inputs, as in two fresh clones: its own empty MLflow store, another
pipeline run, another output folder. The files DVC tracks must come out byte-identical; what differs between the
runs (run ids, the pipeline run, speeds, times) must be in the sidecars (`sanet.infra.provenance`) and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from sanet.config import load_params
from sanet.contracts.files import TRAIN_PROVENANCE_FILE
from sanet.engine.checkpoint import load_model_file
from sanet.evaluation.stage import run_evaluate
from sanet.hpo.stage import run_hpo
from sanet.infra.hashing import file_md5
from sanet.infra.provenance import read_sidecar, sidecar_path
from sanet.registry.stage import run_register
from sanet.report.stage import run_report
from sanet.train.stage import run_train

TRAIN_OUTPUTS = ("model.pt", "metrics.json", "history.csv")  # the train stage's outs in dvc.yaml
RUN_DEPENDENT = ("run_id", "pipeline_run", "git_sha", "images_per_second", "seconds", "evaluated_at", "version")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _folder(path: Path) -> dict[str, str]:
    """Every file under `path` (relative name -> md5): how DVC sees an output folder."""
    return {p.relative_to(path).as_posix(): _md5(p) for p in sorted(path.rglob("*")) if p.is_file()}


def _clone(base: Path, template_db: Path, name: str) -> Path:
    """A fresh working folder with an empty MLflow store, as a fresh clone has."""
    folder = base / name
    folder.mkdir()
    shutil.copy(template_db, folder / "mlflow.db")
    return folder


@pytest.fixture(scope="module")
def clones(
    tiny_overrides, params_file: Path, template_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict]:
    """Two fresh clones, each with one training, one evaluation, one report and one registration of its own."""
    base = tmp_path_factory.mktemp("clones")
    done = []
    threads = torch.get_num_threads()
    for name in ("a", "b"):
        folder = _clone(base, template_db, name)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
            patch.setenv("SANET_PIPELINE_RUN", f"pipeline-{name}")  # another `make demo`: another pipeline run
            overrides = tiny_overrides(folder, "train.epochs=1", "train.threads=1", "tracking.log_model=false")
            params = load_params(params_file, overrides)
            # the paths of dvc.yaml's commands, relative to the clone
            trained = run_train(params, out_dir="outputs/train", progress=False)
            assert torch.get_num_threads() == threads  # train.threads is the training's, not the caller's
            model = Path("outputs/train/model.pt")
            evaluated = run_evaluate(params, "market1501", model, out_dir="reports/eval/market1501", progress=False)
            assert torch.get_num_threads() == threads  # and so is the evaluation's
            reports = Path("reports")
            report = run_report(
                params, reports / "eval", Path("outputs/train"), reports / "benchmark.md", reports / "figures"
            )
            registered = run_register(params, model, reports / "eval", reports / "registry.json")
            hpo = [
                "hpo.trials=2",
                "hpo.epochs=1",
                "hpo.val_ids=2",
                "hpo.pruning.startup_trials=2",
                "hpo.ranges.afe_layers={low: 1, high: 2}",
            ]
            study = run_hpo(load_params(params_file, [*overrides, *hpo]), "joint", progress=False)[1]
        steps = {"train": trained, "evaluate": evaluated, "report": report, "register": registered, "study": study}
        done.append({"folder": folder, **steps})
    return done


def test_two_trainings_write_byte_identical_outputs(clones: list[dict]) -> None:
    a, b = (clone["folder"] / "outputs/train" for clone in clones)
    for name in TRAIN_OUTPUTS:
        assert _md5(a / name) == _md5(b / name), name
    _, _, meta = load_model_file(a / "model.pt")
    assert not {"train_run_id", "pipeline_run"} & set(meta) and len(meta["data_md5"]) == 32
    assert "images_per_second" not in (a / "history.csv").read_text().splitlines()[0]
    assert not {"images_per_second", "train_seconds"} & set(json.loads((a / "metrics.json").read_text()))
    # the run-dependent facts: in the sidecar beside the outputs, naming the model file they belong to
    first, second = (read_sidecar(folder / TRAIN_PROVENANCE_FILE) for folder in (a, b))
    assert first["model_md5"] == second["model_md5"] == file_md5(a / "model.pt")
    assert first["train_run_id"] == clones[0]["train"].run_id != second["train_run_id"]
    assert (first["pipeline_run"], second["pipeline_run"], first["threads"]) == ("pipeline-a", "pipeline-b", 1)


def test_an_evaluation_writes_the_same_folder_in_every_clone(clones: list[dict]) -> None:
    a, b = (clone["folder"] / clone["evaluate"].out_dir for clone in clones)
    assert _folder(a) == _folder(b)
    assert {"metrics.json", "run.json", "cmc.csv", "ranked_list.png"} <= set(_folder(a))
    for name in ("metrics.json", "run.json"):
        text = (a / name).read_text()
        assert not [key for key in RUN_DEPENDENT if key in text], name
    first, second = (read_sidecar(sidecar_path(folder)) for folder in (a, b))
    assert sidecar_path(a) == a.parent / "market1501.provenance.json"
    assert first["mlflow_run_id"] == clones[0]["evaluate"].run_id != second["mlflow_run_id"]
    assert first["train_run_id"] == clones[0]["train"].run_id  # found through the training's sidecar
    assert first["pipeline_run"] == "pipeline-a" and first["images_per_second"] > 0


def test_the_report_and_the_registry_record_are_the_same_in_every_clone(clones: list[dict]) -> None:
    a, b = (clone["folder"] / "reports" for clone in clones)
    for name in ("benchmark.md", "benchmark.txt", "registry.json"):
        assert _md5(a / name) == _md5(b / name), name
    assert _folder(a / "figures") == _folder(b / "figures") and _folder(a / "figures")
    report = (a / "benchmark.md").read_text()
    assert clones[0]["report"].mlflow_run_id not in report and "pipeline-a" not in report
    record = json.loads((a / "registry.json").read_text())
    assert not [key for key in RUN_DEPENDENT if key in json.dumps(record)]
    assert record["decision"]["kind"] == "first"
    assert record["model_md5"] == file_md5(a.parent / "outputs/train/model.pt")
    provenance = read_sidecar(sidecar_path(a / "registry.json"))
    result = clones[0]["register"]
    assert (provenance["version"], provenance["aliases"]) == (1, {"candidate": 1, "champion": 1})
    assert provenance["run_ids"]["register"] == result.run_id
    assert provenance["run_ids"]["train"] == clones[0]["train"].run_id  # the training run, by its sidecar
    assert read_sidecar(sidecar_path(a / "benchmark.md"))["mlflow_run_id"] == clones[0]["report"].mlflow_run_id


def test_a_study_writes_the_same_summary_and_plots_in_every_clone(clones: list[dict]) -> None:
    a, b = (clone["folder"] / "reports/hpo" for clone in clones)
    for name in ("joint.json", "joint-history.png", "joint-importance.png"):
        assert _md5(a / name) == _md5(b / name), name
    summary = json.loads((a / "joint.json").read_text())
    assert not [key for key in RUN_DEPENDENT if key in json.dumps(summary)] and "storage" not in summary
    assert (summary["importances"] == {}) == (summary["importances_note"] is not None)  # computed, or why not
    provenance = read_sidecar(sidecar_path(a / "joint.json"))
    assert provenance["parent_run_id"] == clones[0]["study"].parent_run_id and provenance["storage"]
    assert provenance["best_run_id"] == provenance["trial_run_ids"][str(summary["best"]["trial"])]
