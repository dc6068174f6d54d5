"""`sanet hpo`: search spaces, trial settings, study names, storage checks, studies, pruning, concurrent workers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from paths import PARAMS_FILE

from sanet.config import ConfigError, Params, load_params
from sanet.hpo.errors import HPOError
from sanet.hpo.settings import compress_milestones, study_name, trial_params
from sanet.hpo.spaces import DOTTED, SPACES, space_params, suggest
from sanet.hpo.stage import run_hpo
from sanet.hpo.study import create_study
from sanet.hpo.study_storage import check_storage, open_storage, storage_url
from sanet.hpo.summary import summarise_study
from sanet.hpo.worker import run_worker
from sanet.infra.tracking import TrackingError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient stores or torchrun; MLflow's artifacts (./mlruns beside a sqlite store) land in tmp_path."""
    for name in ("MLFLOW_TRACKING_URI", "SANET_HPO_STORAGE", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store(template_db: Path, tmp_path: Path) -> Path:
    """A folder with an empty MLflow database (a copy: migrations take seconds) for tracking and the Optuna db."""
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return tmp_path


def hpo_overrides(tiny_overrides: Callable[..., list[str]], store: Path, *extra: str) -> list[str]:
    """The tiny training of tests/conftest.py, as two-trial studies of two-epoch trials on 2 held-out identities."""
    return tiny_overrides(
        store,
        "tracking.log_model=false",
        "hpo.trials=2",
        "hpo.epochs=2",
        "hpo.val_ids=2",
        "hpo.pruning.startup_trials=2",  # no pruning in a two-trial study (the pruning test sets its own)
        "hpo.pruning.warmup_epochs=0",
        f"hpo.storage=sqlite:///{store / 'optuna.db'}",
        f"hpo.out_dir={store / 'trials'}",
        f"hpo.reports_dir={store / 'reports'}",
        *extra,
    )


def hpo_params(tiny_overrides: Callable[..., list[str]], store: Path, *extra: str) -> Params:
    return load_params(PARAMS_FILE, hpo_overrides(tiny_overrides, store, *extra))


def paper_params(*overrides: str) -> Params:
    return load_params(PARAMS_FILE, ["profile=paper", *overrides])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(client: MlflowClient, experiment: str, stage: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], filter_string=f"tags.stage = '{stage}'")


def test_the_package_imports_without_torch_optuna_or_mlflow() -> None:
    code = "import sys, sanet.hpo; print(sorted(m for m in ('torch', 'optuna', 'mlflow') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


# ---- search spaces and trial settings ------------------------------------------------------------------------


@pytest.mark.parametrize("space", SPACES)
def test_suggest_samples_the_space_within_its_ranges(space: str) -> None:
    params = paper_params("hpo.ranges.afe_layers={low: 2, high: 8, step: 2}", "hpo.ranges.afe_kernel=[3, 5]")
    ranges = params.hpo.ranges
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, set] = {}
    for _ in range(30):
        trial = study.ask()
        values = suggest(trial, space, ranges)
        assert set(values) == {DOTTED[name] for name in space_params(space)}
        assert set(trial.params) == set(space_params(space))  # Optuna names: afe_layers, afe_kernel, triplet_weight
        for key, value in values.items():
            seen.setdefault(key, set()).add(value)
        if "model.afe.layers" in values:
            assert isinstance(values["model.afe.layers"], int) and values["model.afe.layers"] in (2, 4, 6, 8)
        if "model.afe.kernel" in values:
            assert values["model.afe.kernel"] in (3, 5)
        if "loss.triplet_weight" in values:
            assert 0.01 <= values["loss.triplet_weight"] <= 1.0
        study.tell(trial, 0.0)
    assert all(len(values) > 1 for values in seen.values())  # it does sample, not return a constant
    if space == "joint":
        assert set(seen) == {"model.afe.layers", "model.afe.kernel", "loss.triplet_weight"}


def test_unknown_space_is_refused_by_every_entry_point(store: Path) -> None:
    params = paper_params(f"tracking.uri=sqlite:///{store / 'mlflow.db'}", f"hpo.storage=sqlite:///{store / 'o.db'}")
    study = optuna.create_study()
    calls = [
        lambda: suggest(study.ask(), "afe_width", params.hpo.ranges),
        lambda: study_name(params, "afe_width"),
        lambda: create_study(params, "afe_width"),
        lambda: run_worker(params, "afe_width"),
        lambda: run_hpo(params, "afe_width"),
        lambda: summarise_study(params, "afe_width"),
    ]
    for call in calls:
        with pytest.raises(HPOError, match="unknown search space 'afe_width'; allowed: afe_layers, afe_kernel, "):
            call()
    assert not (store / "o.db").exists()


def test_an_afe_space_needs_a_model_with_an_afe(store: Path) -> None:
    params = paper_params("model.variant=global", f"tracking.uri=sqlite:///{store / 'mlflow.db'}")
    with pytest.raises(HPOError, match=r"model.variant 'global' has no AFE"):
        create_study(params, "afe_kernel")


def test_trial_params_compress_the_schedule_and_validate_on_held_out_identities() -> None:
    params = paper_params("hpo.epochs=10", "hpo.val_ids=50", "hpo.experiment=search")
    assert (params.train.epochs, params.train.milestones, params.train.warmup_epochs) == (150, [60, 120], 10)
    trial = trial_params(params, {"model.afe.layers": 3, "loss.triplet_weight": 0.5})
    assert trial.model.afe.layers == 3 and trial.loss.triplet_weight == 0.5
    assert trial.train.epochs == 10
    assert trial.train.milestones == [4, 8]  # 60 and 120 of 150 epochs
    assert trial.train.warmup_epochs == pytest.approx(10 * 10 / 150)
    assert trial.train.eval_every == 1 and trial.train.eval_untrained is False and trial.train.val_ids == 50
    assert trial.tracking.log_model is False and trial.tracking.experiment == "search"
    assert trial.train.lr == params.train.lr and trial.model.afe.kernel == params.model.afe.kernel
    # short schedules: milestones stay >= 1, below the last epoch where possible, increasing and distinct
    assert compress_milestones([60, 120], 2 / 150, 2) == [1]
    assert compress_milestones([60, 120], 1 / 150, 1) == [1]
    assert compress_milestones([5, 10, 15], 4 / 20, 4) == [1, 2, 3]


def test_trial_params_name_the_invalid_key() -> None:
    params = paper_params()
    with pytest.raises(ConfigError, match=r"model\.afe\.kernel: must be odd .* \(got 4\)"):
        trial_params(params, {"model.afe.kernel": 4})
    with pytest.raises(ConfigError, match=r"model\.afe\.layerz: unknown key"):
        trial_params(params, {"model.afe.layerz": 3})


def test_study_name_hashes_what_determines_a_trial_and_nothing_else(tmp_path: Path) -> None:
    base = paper_params()
    name = study_name(base, "afe_layers")
    assert name.startswith("sanet-paper-afe_layers-") and len(name.rsplit("-", 1)[1]) == 8
    assert study_name(paper_params(), "afe_layers") == name
    same = [
        "hpo.trials=99",
        "hpo.timeout=60",
        "hpo.storage=sqlite:///elsewhere.db",
        "hpo.experiment=other",
        "hpo.out_dir=/x",
        "hpo.reports_dir=/y",
        "data.root=/mnt/data",
        "data.workers=0",
        "model.afe.layers=3",  # the searched value itself: every trial sets its own
        "hpo.ranges.afe_kernel=[1, 3]",  # a range this space does not use
    ]
    for override in same:
        assert study_name(paper_params(override), "afe_layers") == name, override
    different = [
        "hpo.epochs=5",
        "hpo.val_ids=50",
        "hpo.seed=1",
        "hpo.pruning.warmup_epochs=2",
        "hpo.ranges.afe_layers={low: 2, high: 8}",
        "model.afe.kernel=5",
        "train.lr=0.02",
        "seed=1",
        "evaluation.distance=cosine",
    ]
    for override in different:
        assert study_name(paper_params(override), "afe_layers") != name, override
    assert study_name(paper_params("model.afe.layers=3"), "afe_kernel") != study_name(base, "afe_kernel")
    assert len({study_name(base, space) for space in SPACES}) == 4
    # the same in another process (no dependence on hash randomisation or import order)
    code = "from sanet.config import load_params; from sanet.hpo.settings import study_name; "
    code += f"print(study_name(load_params({str(PARAMS_FILE)!r}, ['profile=paper']), 'afe_layers'))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip() == name, done.stderr


# ---- storages --------------------------------------------------------------------------------------------------


def test_storage_url_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    params = paper_params("hpo.storage=sqlite:///mine.db")
    assert storage_url(params) == "sqlite:///mine.db"
    monkeypatch.setenv("SANET_HPO_STORAGE", " ")
    assert storage_url(params) == "sqlite:///mine.db"
    monkeypatch.setenv("SANET_HPO_STORAGE", "journal:shared.log")
    assert storage_url(params) == "journal:shared.log"


def test_an_unreachable_database_fails_the_check_in_seconds_without_its_password() -> None:
    url = f"postgresql+psycopg://optuna:s3cret@127.0.0.1:{_closed_port()}/studies"
    start = time.monotonic()
    with pytest.raises(HPOError) as caught:
        check_storage(url, timeout=3)
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert "Optuna storage" in message and "127.0.0.1" in message and "unreachable" in message
    assert "s3cret" not in message and "***" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("optuna.db", "not a storage URL; accepted: sqlite:///PATH"),
        ("http://127.0.0.1:5000", "http:// is not a storage; accepted: sqlite:///PATH"),
        ("postgres://u@h/db", "write postgresql://"),
        ("journal:", "journal: needs a file path"),
        ("sqlite:///:memory:", "an in-memory database dies with its process"),
    ],
)
def test_a_url_that_is_no_storage_is_refused_saying_what_is_accepted(url: str, expected: str) -> None:
    with pytest.raises(HPOError, match=expected):
        check_storage(url)


def test_file_storages_need_a_writable_folder_and_a_usable_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(HPOError, match=r"cannot create the folder .*a-file"):
        check_storage(f"sqlite:///{blocker / 'optuna.db'}")
    with pytest.raises(HPOError, match=r"cannot create the folder .*a-file"):
        check_storage(f"journal:{blocker / 'optuna.log'}")
    with pytest.raises(HPOError, match="is not a SQLite database"):
        check_storage(f"sqlite:///{blocker}")
    (tmp_path / "folder.log").mkdir()
    with pytest.raises(HPOError, match="exists and is not a file"):
        check_storage(f"journal:{tmp_path / 'folder.log'}")
    check_storage(f"sqlite:///{tmp_path / 'new' / 'optuna.db'}")  # folders are created
    check_storage(f"journal:{tmp_path / 'deeper' / 'optuna.log'}")
    assert (tmp_path / "new").is_dir() and (tmp_path / "deeper").is_dir()


def test_a_journal_storage_holds_a_study_across_processes(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'j' / 'optuna.log'}"
    check_storage(url)
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    code = "import optuna; from sanet.hpo.study_storage import open_storage; "
    code += f"print(len(optuna.load_study(study_name='s', storage=open_storage({url!r})).trials))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "2", done.stderr


# ---- studies ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", SPACES)
def test_a_two_trial_study_reports_its_best_and_nests_its_trials(
    space: str,
    tiny_overrides,
    store: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = hpo_params(tiny_overrides, store, "hpo.ranges.afe_layers={low: 1, high: 2}")
    worker, summary = run_hpo(params, space, progress=False, device="cpu")
    output = capsys.readouterr().out

    name = study_name(params, space)
    assert (worker.study, worker.trials_run, worker.completed, worker.pruned, worker.failed) == (name, 2, 2, 0, 0)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{store / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(set(t.params) == set(space_params(space)) for t in study.trials)
    assert all(set(t.intermediate_values) == {1, 2} for t in study.trials)  # mAP reported after every epoch

    report = json.loads((store / "reports" / f"{space}.json").read_text())
    assert summary is not None and summary.json_path == store / "reports" / f"{space}.json"
    assert list(report) == [  # no storage URL, no run ids: a DVC output (they are in the sidecar)
        "study",
        "space",
        "direction",
        "metric",
        "best",
        "trials",
        "importances",
        "importances_note",
        "history",
    ]
    best = max(study.trials, key=lambda t: t.value)
    assert report["study"] == name and report["space"] == space and report["direction"] == "maximize"
    assert report["metric"] == "mean of holistic and partial mAP on 2 held-out identities of market1501"
    assert report["best"]["value"] == best.value == summary.best_value
    assert report["best"]["params"] == best.params and report["best"]["trial"] == best.number
    assert report["best"]["dotted"] == {DOTTED[k]: v for k, v in best.params.items()}
    assert report["trials"] == {"complete": 2, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    # importances when the two trials scored differently; a tie gives none and says so (never a silent {})
    if len({t.value for t in study.trials}) == 2:
        assert set(report["importances"]) == set(space_params(space)) and report["importances_note"] is None
        assert sum(report["importances"].values()) == pytest.approx(1.0, abs=1e-3)
    else:
        assert report["importances"] == {} and "tie" in report["importances_note"]
    assert [(h["number"], h["state"], h["value"]) for h in report["history"]] == [
        (t.number, "COMPLETE", t.value) for t in study.trials
    ]
    for figure in (f"{space}-history.png", f"{space}-importance.png"):
        data = (store / "reports" / figure).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, figure

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (parent,) = _runs(client, "sanet-hpo", "hpo")
    provenance = json.loads((store / "reports" / f"{space}.provenance.json").read_text())
    assert parent.info.run_id == provenance["parent_run_id"] == study.user_attrs["mlflow_parent_run_id"]
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"study {name}"
    assert parent.data.tags["hpo_space"] == space and parent.data.tags["optuna_study"] == name
    assert parent.data.metrics["best_value"] == best.value
    assert json.loads(parent.data.tags["best_params"]) == best.params
    assert {f"best/{k}" for k in best.params} <= set(parent.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {f"{space}.json", f"{space}-history.png", f"{space}-importance.png"} <= artifacts
    trials = _runs(client, "sanet-hpo", "hpo_trial")
    assert len(trials) == 2
    assert {r.info.run_id for r in trials} == {t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert provenance["best_run_id"] == best.user_attrs["mlflow_run_id"] and "mlflow_run_id" not in report["best"]
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna_state"] == "COMPLETE" and run.info.status == "FINISHED"
        assert run.data.tags["optuna_study"] == name and run.data.tags["hpo_space"] == space
        # scored on held-out training identities only: no test benchmark, no untrained baseline
        assert {key.split("/")[0] for key in run.data.metrics} == {"train", "epoch", "val", "final"}
        assert run.data.params["epochs"] == "2" and run.data.params["val_ids"] == "2"
    validations = [line for line in output.splitlines() if line.startswith(("val:", "final:", "untrained:"))]
    assert len(validations) == 4  # two epochs of two trials
    assert all("(held-out 2 ids)" in line and "(2 queries," in line for line in validations)
    assert not list((store / "trials").rglob("*.pt"))  # the trials' checkpoints were deleted


def _study_of(space: str, *trials: tuple[dict, float]) -> optuna.Study:
    """An in-memory study of `space` holding COMPLETE trials (params, value)."""
    distributions = {
        "afe_layers": optuna.distributions.IntDistribution(1, 8),
        "afe_kernel": optuna.distributions.CategoricalDistribution([1, 3, 5, 7]),
        "triplet_weight": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
    }
    study = optuna.create_study(direction="maximize")
    for values, value in trials:
        used = {name: distributions[name] for name in values}
        study.add_trial(optuna.trial.create_trial(params=values, distributions=used, value=value))
    return study


JOINT_A = {"afe_layers": 1, "afe_kernel": 3, "triplet_weight": 0.1}
JOINT_B = {"afe_layers": 2, "afe_kernel": 5, "triplet_weight": 0.3}


@pytest.mark.parametrize(
    ("space", "trials", "note"),
    [
        ("joint", [(JOINT_A, 0.5), (JOINT_B, 0.5)], "the 2 complete trials tie (all scored 0.5)"),
        ("triplet_weight", [({"triplet_weight": 0.1}, 0.5), ({"triplet_weight": 0.3}, 0.5)], "tie"),
        ("joint", [(JOINT_A, 0.5), (JOINT_A, 0.4)], "all ran the same parameters"),
        ("afe_layers", [({"afe_layers": 1}, 0.5)], "1 complete trial(s): importances need at least 2"),
    ],
)
def test_importances_of_ties_or_too_few_trials_are_none_with_a_note_saying_why(
    space: str, trials: list[tuple[dict, float]], note: str
) -> None:
    from sanet.hpo.summary import _importances

    importances, why = _importances(_study_of(space, *trials), space, len(trials), seed=0)
    assert importances == {} and why is not None and note in why


@pytest.mark.parametrize("space", ["joint", "triplet_weight"])
def test_importances_of_different_scores_cover_the_space_and_sum_to_one(space: str) -> None:
    from sanet.hpo.summary import _importances

    names = space_params(space)
    trials = [({k: v for k, v in JOINT_A.items() if k in names}, 0.5), ({k: JOINT_B[k] for k in names}, 0.4)]
    importances, why = _importances(_study_of(space, *trials), space, 2, seed=0)
    assert why is None and set(importances) == set(names)
    assert sum(importances.values()) == pytest.approx(1.0, abs=1e-3)
    assert _importances(_study_of(space, *trials), space, 2, seed=0)[0] == importances  # seeded: deterministic


def test_a_trial_below_the_median_is_pruned_and_its_run_killed(tiny_overrides, store: Path) -> None:
    params = hpo_params(tiny_overrides, store, "hpo.pruning.startup_trials=0", "hpo.pruning.warmup_epochs=0")
    space = "triplet_weight"
    info = create_study(params, space)
    storage = f"sqlite:///{store / 'optuna.db'}"
    study = optuna.load_study(study_name=info.name, storage=storage)
    # an earlier trial whose every intermediate value beats any mAP: the next trial is below the median at epoch 1
    study.add_trial(
        optuna.trial.create_trial(
            params={"triplet_weight": 0.1},
            distributions={"triplet_weight": optuna.distributions.FloatDistribution(0.01, 1.0, log=True)},
            value=2.0,
            intermediate_values={1: 2.0, 2: 2.0},
        )
    )
    worker = run_worker(params, space, progress=False, device="cpu")
    assert (worker.trials_run, worker.completed, worker.pruned, worker.failed) == (1, 0, 1, 0)
    pruned = optuna.load_study(study_name=info.name, storage=storage).trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert list(pruned.intermediate_values) == [1]  # stopped after its first epoch
    run = MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_run(pruned.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["optuna_state"] == "PRUNED"
    assert "val/mAP" in run.data.metrics and "final/mAP" not in run.data.metrics
    assert not (store / "trials" / info.name / "trial-1").exists()

    again = run_worker(params, space, progress=False, device="cpu")  # the study holds its 2 trials: nothing to do
    assert again.trials_run == 0
    summary = summarise_study(params, space)
    assert summary.best_trial == 0 and summary.counts["pruned"] == 1 and summary.counts["complete"] == 1


def test_summaries_need_a_study_with_a_complete_trial(store: Path) -> None:
    params = paper_params(
        f"tracking.uri=sqlite:///{store / 'mlflow.db'}", f"hpo.storage=sqlite:///{store / 'optuna.db'}"
    )
    with pytest.raises(HPOError, match=r"study sanet-paper-afe_kernel-\w{8} not found in the Optuna storage sqlite"):
        summarise_study(params, "afe_kernel")
    info = create_study(params, "afe_kernel")
    assert info.created and create_study(params, "afe_kernel").parent_run_id == info.parent_run_id
    with pytest.raises(HPOError, match=rf"study {info.name} .* has no COMPLETE trial yet"):
        summarise_study(params, "afe_kernel")
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (parent,) = _runs(client, "sanet-hpo", "hpo")
    assert parent.info.run_id == info.parent_run_id and parent.info.status == "RUNNING"


def test_a_study_without_its_parent_run_gets_one(
    store: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sanet.hpo.study

    monkeypatch.setattr(sanet.hpo.study, "PARENT_WAIT", 0.5)
    storage = f"sqlite:///{store / 'optuna.db'}"
    params = paper_params(f"tracking.uri=sqlite:///{store / 'mlflow.db'}", f"hpo.storage={storage}")
    # the creator died between creating the study and publishing its parent run
    optuna.create_study(study_name=study_name(params, "afe_layers"), storage=storage, direction="maximize")
    info = create_study(params, "afe_layers")
    assert not info.created and "has no MLflow parent run after 0.5 s; creating it" in capsys.readouterr().out
    study = optuna.load_study(study_name=info.name, storage=storage)
    assert study.user_attrs["mlflow_parent_run_id"] == info.parent_run_id
    # a new tracking store for an old study: the parent run is created there too
    shutil.copy(template_db, store / "other.db")
    moved = paper_params(f"tracking.uri=sqlite:///{store / 'other.db'}", f"hpo.storage={storage}")
    again = create_study(moved, "afe_layers")
    assert again.name == info.name and again.parent_run_id != info.parent_run_id
    assert MlflowClient(f"sqlite:///{store / 'other.db'}").get_run(again.parent_run_id).info.status == "RUNNING"
    assert optuna.load_study(study_name=info.name, storage=storage).user_attrs["mlflow_parent_run_id"] == (
        again.parent_run_id
    )


# ---- bad input stops before any training -----------------------------------------------------------------------


def test_an_unreachable_storage_stops_before_any_training(tiny_overrides, store: Path) -> None:
    params = hpo_params(tiny_overrides, store, f"hpo.storage=postgresql+psycopg://u:pw@127.0.0.1:{_closed_port()}/db")
    start = time.monotonic()
    with pytest.raises(HPOError, match=r"Optuna storage postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:\d+/db is unreach"):
        run_hpo(params, "afe_layers", progress=False, device="cpu")
    assert time.monotonic() - start < 15
    assert not (store / "trials").exists()
    assert _runs(MlflowClient(f"sqlite:///{store / 'mlflow.db'}"), "sanet-hpo", "hpo_trial") == []


def test_an_unreachable_tracking_server_stops_before_any_training(
    tiny_overrides,
    store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = hpo_params(tiny_overrides, store)
    with pytest.raises(TrackingError, match=rf"tracking server {uri} is unreachable"):
        run_hpo(params, "afe_layers", progress=False, device="cpu")
    assert not (store / "optuna.db").exists() and not (store / "trials").exists()


def test_too_many_held_out_identities_or_torchrun_stop_before_any_study(
    tiny_overrides,
    store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = hpo_params(tiny_overrides, store, "hpo.val_ids=5")
    with pytest.raises(HPOError, match=r"hpo.val_ids \(5\): .*leaves fewer than 2"):
        run_worker(params, "afe_layers", progress=False, device="cpu")
    assert not (store / "trials").exists()
    assert _runs(MlflowClient(f"sqlite:///{store / 'mlflow.db'}"), "sanet-hpo", "hpo") == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(HPOError, match="WORLD_SIZE is 2"):
        run_worker(hpo_params(tiny_overrides, store), "afe_layers")


# ---- concurrent workers ---------------------------------------------------------------------------------------

WORKER_SCRIPT = r"""
import json, sys
from sanet.config import load_params
from sanet.hpo.stage import run_hpo

params = load_params(sys.argv[1], json.loads(sys.argv[2]))
worker, summary = run_hpo(params, sys.argv[3], worker=int(sys.argv[4]), progress=False, device="cpu")
print("RESULT", json.dumps({"trials_run": worker.trials_run, "failed": worker.failed}))
"""


def _two_workers(overrides: list[str], space: str, cwd: Path, env: dict[str, str]) -> list[dict]:
    args = [sys.executable, "-c", WORKER_SCRIPT, str(PARAMS_FILE), json.dumps(overrides), space]
    processes = [
        subprocess.Popen([*args, str(n)], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in (0, 1)
    ]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr[-3000:]
            (line,) = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
            results.append(json.loads(line.removeprefix("RESULT ")))
    finally:
        for process in processes:
            process.kill()
    return results


def _check_shared_study(params: Params, space: str, storage: str, store: Path, results: list[dict]) -> None:
    study = optuna.load_study(study_name=study_name(params, space), storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= 4
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1}  # both workers ran trials
    assert all(r["trials_run"] >= 1 and r["failed"] == 0 for r in results)
    assert sum(r["trials_run"] for r in results) == len(study.trials)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (parent,) = _runs(client, "sanet-hpo", "hpo")
    assert parent.info.run_id == study.user_attrs["mlflow_parent_run_id"]
    trials = _runs(client, "sanet-hpo", "hpo_trial")
    assert len(trials) == len(study.trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    report = json.loads((store / "reports" / f"{space}.json").read_text())
    assert report["best"]["value"] == study.best_value


def _worker_env() -> dict[str, str]:
    """No ambient stores; one compute thread per worker: two workers' thread pools on 2 cores slow both 5-fold."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SANET_HPO_STORAGE", "WORLD_SIZE")}
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_two_workers_share_one_study_in_a_fresh_sqlite_file(tiny_overrides, store: Path) -> None:
    overrides = hpo_overrides(tiny_overrides, store, "hpo.trials=4")
    results = _two_workers(overrides, "triplet_weight", store, _worker_env())
    params = load_params(PARAMS_FILE, overrides)
    _check_shared_study(params, "triplet_weight", f"sqlite:///{store / 'optuna.db'}", store, results)


def test_two_workers_share_one_study_in_a_fresh_postgresql_schema(
    tiny_overrides,
    store: Path,
    postgres_url: str,
) -> None:
    overrides = hpo_overrides(tiny_overrides, store, "hpo.trials=4")
    env = _worker_env() | {"SANET_HPO_STORAGE": postgres_url}  # the environment overrides hpo.storage
    results = _two_workers(overrides, "triplet_weight", store, env)
    params = load_params(PARAMS_FILE, overrides)
    _check_shared_study(params, "triplet_weight", postgres_url, store, results)
    assert not (store / "optuna.db").exists()
