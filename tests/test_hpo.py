"""`sanet hpo`: search spaces, trial settings, study names, storage checks, studies, sampling without duplicates,
figures, pruning, concurrent workers."""

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
from sanet.hpo.figures import FIGURES, figure_file, study_figures
from sanet.hpo.search import DUPLICATE_ATTR, TrialBudget, check_duplicate, make_sampler, search_report
from sanet.hpo.settings import compress_milestones, study_name, trial_params
from sanet.hpo.spaces import DOTTED, SPACES, searched_space, space_params, space_size, suggest
from sanet.hpo.stage import run_hpo
from sanet.hpo.study import StudyInfo, create_study, parent_params
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
        "search",
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
    # two settings of the space, never the same one twice; afe_layers 1..2 holds two settings: both tried
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 2
    finite = space in ("afe_layers", "afe_kernel")
    assert report["search"] == {
        "sampler": "BruteForceSampler" if finite else "TPESampler",
        "parameters": list(space_params(space)),
        "settings": {"afe_layers": 2, "afe_kernel": 4}.get(space),
        "settings_tried": 2,
        "exhausted": space == "afe_layers",
        "duplicates": [],
    }
    # two complete trials are too few for importances: none, and a note saying why (never a silent {})
    assert report["importances"] == {} and "too few complete trials (2)" in report["importances_note"]
    assert [(h["number"], h["state"], h["value"]) for h in report["history"]] == [
        (t.number, "COMPLETE", t.value) for t in study.trials
    ]
    assert summary.figures == [store / "reports" / figure_file(space, kind) for kind in FIGURES]
    for path in summary.figures:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, path

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
    assert {f"{space}.json", *(figure_file(space, kind) for kind in FIGURES)} <= artifacts
    # the parent run logs the searched space under the searched keys, never the base value no trial used
    for key, searched in searched_space(space, params.hpo.ranges).items():
        assert parent.data.params[key] == searched and searched.startswith("search: ")
    assert parent.data.params["train.epochs"] == "2" and parent.data.params["train.lr"] == str(params.train.lr)
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
        assert run.data.params["train.epochs"] == "2" and run.data.params["train.val_ids"] == "2"
        (trial,) = [t for t in study.trials if t.user_attrs["mlflow_run_id"] == run.info.run_id]
        assert {key: run.data.params[DOTTED[key]] for key in trial.params} == {
            key: str(value) for key, value in trial.params.items()
        }  # the sampled values, under their dotted params.yaml keys
    validations = [line for line in output.splitlines() if line.startswith(("val:", "final:", "untrained:"))]
    assert len(validations) == 4  # two epochs of two trials
    assert all("(held-out 2 ids)" in line and "(2 queries," in line for line in validations)
    assert not list((store / "trials").rglob("*.pt"))  # the trials' checkpoints were deleted
    if space == "afe_layers":  # its two settings are tried: more trials would train one again, so none starts
        again = run_worker(params, space, trials=5, progress=False, device="cpu")
        assert (again.trials_run, again.duplicates) == (0, 0)
        assert "every setting of the space afe_layers has been tried" in capsys.readouterr().out


DISTRIBUTIONS = {
    "afe_layers": optuna.distributions.IntDistribution(1, 8),
    "afe_kernel": optuna.distributions.CategoricalDistribution([1, 3, 5, 7]),
    "triplet_weight": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
}


def _study_of(space: str, *trials: tuple[dict, float], name: str = "s") -> optuna.Study:
    """An in-memory study of `space` holding COMPLETE trials (params, value), each with a score per epoch."""
    study = optuna.create_study(study_name=name, direction="maximize")
    for values, value in trials:
        used = {key: DISTRIBUTIONS[key] for key in values}
        study.add_trial(
            optuna.trial.create_trial(
                params=values, distributions=used, value=value, intermediate_values={1: value / 2, 2: value}
            )
        )
    return study


JOINT_A = {"afe_layers": 1, "afe_kernel": 3, "triplet_weight": 0.1}
JOINT_B = {"afe_layers": 2, "afe_kernel": 5, "triplet_weight": 0.3}
JOINT_C = {"afe_layers": 4, "afe_kernel": 1, "triplet_weight": 0.02}
JOINT_D = {"afe_layers": 7, "afe_kernel": 7, "triplet_weight": 0.7}
FOUR = (JOINT_A, JOINT_B, JOINT_C, JOINT_D)


def _of(space: str, values: dict) -> dict:
    return {key: value for key, value in values.items() if key in space_params(space)}


@pytest.mark.parametrize(
    ("space", "trials", "note"),
    [
        ("joint", [(JOINT_A, 0.5), (JOINT_B, 0.4), (JOINT_C, 0.3)], "too few complete trials (3) for importances"),
        ("afe_layers", [({"afe_layers": 1}, 0.5)], "too few complete trials (1) for importances: they need at least 4"),
        (
            "joint",
            [(v, 0.5) for v in (JOINT_A, JOINT_B, JOINT_C, JOINT_D)],
            "the 4 complete trials tie (all scored 0.5)",
        ),
        ("triplet_weight", [(_of("triplet_weight", v), 0.5) for v in FOUR], "tie"),
        ("joint", [(JOINT_A, 0.5), (JOINT_A, 0.4), (JOINT_A, 0.3), (JOINT_A, 0.2)], "all ran the same parameters"),
    ],
)
def test_importances_of_ties_or_too_few_trials_are_none_with_a_note_saying_why(
    space: str, trials: list[tuple[dict, float]], note: str
) -> None:
    from sanet.hpo.summary import _importances

    importances, why = _importances(_study_of(space, *trials), space, len(trials), seed=0)
    assert importances == {} and why is not None and note in why


def test_importances_of_enough_different_trials_cover_the_space_and_sum_to_one() -> None:
    from sanet.hpo.summary import MIN_IMPORTANCE_TRIALS, _importances

    trials = [(JOINT_A, 0.5), (JOINT_B, 0.4), (JOINT_C, 0.3), (JOINT_D, 0.45)]
    assert len(trials) == MIN_IMPORTANCE_TRIALS
    importances, why = _importances(_study_of("joint", *trials), "joint", 4, seed=0)
    assert why is None and set(importances) == set(space_params("joint"))
    assert sum(importances.values()) == pytest.approx(1.0, abs=1e-3)
    assert _importances(_study_of("joint", *trials), "joint", 4, seed=0)[0] == importances  # seeded: deterministic


def test_the_importance_of_a_one_parameter_space_is_one_with_a_note_saying_so() -> None:
    from sanet.hpo.summary import _importances

    trials = [(_of("triplet_weight", v), score) for v, score in zip(FOUR, (0.5, 0.4, 0.3, 0.2), strict=True)]
    importances, why = _importances(_study_of("triplet_weight", *trials), "triplet_weight", 4, seed=0)
    assert importances == {"triplet_weight": 1.0}
    assert why is not None and "only parameter searched" in why and "triplet_weight-slice.png" in why


# ---- figures ------------------------------------------------------------------------------------------------------


def test_figures_are_optunas_plots_and_the_same_study_gives_the_same_bytes() -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    trials = [(JOINT_A, 0.5), (JOINT_B, 0.4), (JOINT_C, 0.3), (JOINT_D, 0.45)]
    names = space_params("joint")
    first = study_figures(_study_of("joint", *trials, name="a"), "study", names, None, seed=0)
    again = study_figures(_study_of("joint", *trials, name="b"), "study", names, None, seed=0)
    assert list(first) == list(FIGURES) == ["history", "slice", "intermediate", "importance"]
    assert first == again  # byte for byte: no date, no version, seeded fANOVA
    assert all(data.startswith(PNG_MAGIC) and len(data) > 5000 for data in first.values())
    assert len(set(first.values())) == 4
    # pyplot left as found: no figure open, Optuna's ggplot style undone, the Agg backend
    assert plt.get_fignums() == [] and matplotlib.rcParams["axes.facecolor"] != "#E5E5E5"
    assert matplotlib.get_backend().lower() == "agg"
    # the importance figure shows the summary's note instead of bars when there is one
    noted = study_figures(_study_of("joint", *trials[:2]), "study", names, "too few complete trials (2)", seed=0)
    assert noted["importance"] != first["importance"] and noted["history"] != first["history"]
    assert figure_file("joint", "slice") == "joint-slice.png"
    with pytest.raises(ValueError, match="unknown figure 'contour'"):
        figure_file("joint", "contour")


def test_figures_of_a_study_without_intermediate_values_or_with_one_trial_are_drawn() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"afe_kernel": 3}, distributions={"afe_kernel": DISTRIBUTIONS["afe_kernel"]}, value=0.2
        )
    )
    figures = study_figures(study, "study", ["afe_kernel"], "too few complete trials (1)", seed=0)
    assert all(data.startswith(PNG_MAGIC) for data in figures.values())


# ---- sampling: every setting once, the end of a finite space ----------------------------------------------------


def _optimize(params: Params, space: str, study: optuna.Study, total: int, worker: int = 0) -> list[dict]:
    """`study.optimize` as a worker runs it (its sampler, the duplicate check, the budget), with a cheap objective
    that records what it would have trained."""
    trained: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space, params.hpo.ranges)
        check_duplicate(trial)
        trained.append(values)
        return float(sum(float(v) for v in values.values()))

    study.sampler = make_sampler(params, space, worker, total)
    study.optimize(objective, callbacks=[TrialBudget(params, space, total)])
    return trained


def test_a_finite_space_trains_every_setting_once_and_ends_when_exhausted(capsys: pytest.CaptureFixture[str]) -> None:
    params = paper_params("hpo.ranges.afe_kernel=[1, 3, 5]", "hpo.trials=20")
    assert space_size("afe_kernel", params.hpo.ranges) == 3
    study = optuna.create_study(direction="maximize")
    trained = _optimize(params, "afe_kernel", study, total=params.hpo.trials)
    assert sorted(v["model.afe.kernel"] for v in trained) == [1, 3, 5]  # all three, none twice, then the end
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    report = search_report(params, "afe_kernel", study.trials)
    assert report == {
        "sampler": "BruteForceSampler",
        "parameters": ["afe_kernel"],
        "settings": 3,
        "settings_tried": 3,
        "exhausted": True,
        "duplicates": [],
    }
    # a resumed study (another worker, a rerun) starts nothing new: the space holds no untried setting
    assert _optimize(params, "afe_kernel", study, total=params.hpo.trials, worker=1) == []
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.number > 2]


def test_a_finite_space_smaller_than_the_budget_and_larger_ones_sample_deterministically() -> None:
    params = paper_params("hpo.ranges.afe_layers={low: 1, high: 8}")

    def order(seed_worker: int) -> list[int]:
        study = optuna.create_study(direction="maximize")
        return [v["model.afe.layers"] for v in _optimize(params, "afe_layers", study, 5, worker=seed_worker)]

    first = order(0)
    assert len(first) == 5 and len(set(first)) == 5  # the budget, five different settings
    assert order(0) == first  # the same seed: the same trials
    assert order(1) != first  # worker 1 samples with seed + 1


def test_a_duplicate_of_a_complete_trial_is_not_trained_and_not_counted(capsys: pytest.CaptureFixture[str]) -> None:
    params = paper_params()
    study = _study_of("triplet_weight", ({"triplet_weight": 0.1}, 0.5))
    study.enqueue_trial({"triplet_weight": 0.1})  # what a sampler re-proposing a setting would do
    trained = _optimize(params, "triplet_weight", study, total=3)
    duplicate = study.trials[1]
    assert duplicate.state == optuna.trial.TrialState.PRUNED and duplicate.user_attrs[DUPLICATE_ATTR] == 0
    assert duplicate.intermediate_values == {} and duplicate.value is None
    assert len(trained) == 2 and {"loss.triplet_weight": 0.1} not in trained
    assert len(study.trials) == 4  # the duplicate does not count: trials 0, 2 and 3 are the budget of 3
    assert "trial 1 sampled the settings of complete trial 0 (triplet_weight=0.1): not trained" in (
        capsys.readouterr().out
    )
    assert search_report(params, "triplet_weight", study.trials)["duplicates"] == [1]
    assert search_report(params, "triplet_weight", study.trials)["settings"] is None


CHEAP_WORKER = r"""
import sys, time
import optuna
from sanet.config import load_params
from sanet.hpo.search import TrialBudget, check_duplicate, make_sampler
from sanet.hpo.spaces import suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)
params = load_params(sys.argv[1], ["profile=paper", "hpo.ranges.afe_kernel=[1, 3, 5, 7, 9]"])
space, worker, storage = "afe_kernel", int(sys.argv[2]), sys.argv[3]
study = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(params, space, worker, 8))

def objective(trial):
    values = suggest(trial, space, params.hpo.ranges)
    check_duplicate(trial)
    time.sleep(0.3)  # a training: long enough for the other worker to sample meanwhile
    return float(values["model.afe.kernel"])

study.optimize(objective, callbacks=[TrialBudget(params, space, 8)])
"""


def test_two_workers_on_one_storage_try_each_setting_of_a_finite_space_once(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=open_storage(storage), direction="maximize")
    env = _worker_env()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CHEAP_WORKER, str(PARAMS_FILE), str(n), storage],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (0, 1)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-3000:]
    study = optuna.load_study(study_name="s", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.params["afe_kernel"] for t in complete} == {1, 3, 5, 7, 9}
    assert len(study.trials) < 8  # the five settings end the study, not the budget
    # no setting is trained once a trial of it is COMPLETE, whichever worker ran it (two workers sampling the same
    # setting at the same instant may both train it: the check is against complete trials)
    for t in complete:
        for u in complete:
            if u.number != t.number and u.params == t.params:
                assert u.datetime_complete is not None and t.datetime_start is not None
                assert not u.datetime_complete < t.datetime_start, (u.number, t.number)
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(DUPLICATE_ATTR in t.user_attrs for t in others)  # any extra trial is an untrained duplicate
    assert search_report(paper_params("hpo.ranges.afe_kernel=[1, 3, 5, 7, 9]"), "afe_kernel", study.trials)["exhausted"]


def test_the_trial_objective_skips_a_duplicate_before_any_training() -> None:
    from sanet.hpo.trial import TrialObjective

    params = paper_params()
    study = _study_of("afe_kernel", ({"afe_kernel": 3}, 0.5))
    study.enqueue_trial({"afe_kernel": 3})
    info = StudyInfo(name="s", storage="memory", space="afe_kernel", parent_run_id="none", experiment="none")
    objective = TrialObjective(params, "afe_kernel", info, progress=False, device="cpu")
    study.optimize(objective, n_trials=1)  # a training would need data and a tracking store: it would fail
    assert objective.numbers == objective.duplicates == [1]
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    assert study.trials[1].user_attrs[DUPLICATE_ATTR] == 0


def test_the_parent_run_logs_the_searched_space_instead_of_a_base_value() -> None:
    params = paper_params("hpo.ranges.afe_layers={low: 3, high: 7, step: 2}")
    logged = parent_params(params, "joint")
    assert logged["model.afe.layers"] == "search: int 3..7 step 2"
    assert logged["model.afe.kernel"] == "search: one of 1, 3, 5, 7"
    assert logged["loss.triplet_weight"] == "search: float 0.01..1 log"
    assert logged["train.lr"] == str(params.train.lr) and logged["train.epochs"] == str(params.hpo.epochs)
    one = parent_params(params, "afe_layers")
    assert one["model.afe.layers"] == "search: int 3..7 step 2"
    assert one["model.afe.kernel"] == str(params.model.afe.kernel)  # not searched: the value every trial uses
    assert list(one) == [key for key in logged]  # the same keys, in params.yaml's order


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
