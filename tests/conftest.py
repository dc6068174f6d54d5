"""Fixtures shared by several test files.

- `repo_root`, `params_file`: the repository and its params.yaml (module-level code imports tests/paths.py instead);
- `template_db`, `postgres_url`, `workdir`: tracking stores;
- `tiny_synth`, `tiny_synth_with`, `tiny_synth_sets`, `tiny_synth_root`: the one tiny synthetic benchmark of the
  suite, as parameters, derived with a few fields changed, as `sanet synth --set` arguments, and generated once;
- `tiny_data`, `tiny_overrides`, `tiny_model`: that benchmark with its Market-1501 part masks, the tiny training's
  overrides on it, and one model trained on it once;
- `tiny_demo_params`: a params.yaml whose demo profile is the tiny training (for `dvc repro` and the Kubeflow run);
- `tiny_network_params`, `tiny_network`: a tiny untrained network and its parameters.

Session-scoped fixtures build read-only things: a test that changes one works on a copy in its tmp_path.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import yaml
from paths import PARAMS_FILE, REPO_ROOT
from postgres import schema_url

from sanet.config import Params, SynthParams, load_params, resolve

# ---- the repository -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def params_file() -> Path:
    """The repository's params.yaml."""
    return PARAMS_FILE


# ---- tracking stores ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, made once per session; tests copy it (MLflow's schema migrations take seconds)."""
    path = tmp_path_factory.getbasetemp() / f"mlflow-{mlflow.__version__}-empty.db"
    partial = path.with_suffix(".partial")
    mlflow.MlflowClient(f"sqlite:///{partial}").search_experiments()
    partial.rename(path)
    return path


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a fresh schema in the local PostgreSQL `test` database (skips when no server answers)."""
    with schema_url() as url:
        yield url


@pytest.fixture
def workdir(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path as the working directory, with an empty sqlite tracking store copied in as m.db."""
    shutil.copy(template_db, tmp_path / "m.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SANET_PIPELINE_RUN", raising=False)
    yield tmp_path
    mlflow.set_tracking_uri(None)


# ---- the tiny synthetic benchmark -----------------------------------------------------------------------------------

# Six training identities, so that a training can hold two out for validation and still have four to learn from.
TINY_SYNTH: Mapping[str, Mapping[str, int]] = {
    "market": {"train_ids": 6, "test_ids": 4, "distractors": 2, "junk": 1},
    "duke": {"train_ids": 2, "test_ids": 2, "gallery_only_ids": 1},
    "partial": {"partial_reid_ids": 2, "partial_reid_images": 1, "partial_ilids_ids": 2},
}


@pytest.fixture(scope="session")
def tiny_synth() -> SynthParams:
    """The suite's tiny synthetic benchmark: every benchmark's layout, a few identities each (seconds to generate)."""
    return SynthParams.model_validate(TINY_SYNTH)


@pytest.fixture(scope="session")
def tiny_synth_with(tiny_synth: SynthParams) -> Callable[..., SynthParams]:
    """`tiny_synth_with(seed=3, partial={"partial_ilids_ids": 5})`: the tiny benchmark with the fields given changed
    (a section's dict changes only the keys it names); for a test that needs another shape, saying why."""

    def derive(**changes: Any) -> SynthParams:
        raw = tiny_synth.model_dump()
        for key, value in changes.items():
            raw[key] = {**raw[key], **value} if isinstance(value, Mapping) else value
        return SynthParams.model_validate(raw)

    return derive


@pytest.fixture(scope="session")
def tiny_synth_sets(tiny_synth: SynthParams) -> list[str]:
    """The tiny benchmark's sizes as `--set synth.<section>={...}` arguments of the command line."""
    sets = []
    for section in TINY_SYNTH:
        values = getattr(tiny_synth, section).model_dump()
        sets += ["--set", f"synth.{section}={{{', '.join(f'{k}: {v}' for k, v in values.items())}}}"]
    return sets


@pytest.fixture(scope="session")
def tiny_synth_root(tiny_synth: SynthParams, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny benchmark generated once, as `sanet synth` writes it (read-only: copy it to change it)."""
    from sanet.data.synthetic.layouts import write_synthetic

    root = tmp_path_factory.mktemp("tiny-synth") / "data"
    write_synthetic(root, tiny_synth, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_data(tiny_synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny benchmark with its Market-1501 part masks (the other benchmarks have none): (data root, mask folder)."""
    from sanet.masks.stage import run_masks

    base = tmp_path_factory.mktemp("tiny-masks")
    masks = base / "masks"
    params = load_params(PARAMS_FILE, ["profile=demo"])
    run_masks(
        params,
        "market1501",
        root=tiny_synth_root,
        out_dir=masks,
        coverage_file=base / "cov.json",
        metrics_file=base / "cov_summary.json",
        progress=False,
        track=False,
    )
    return tiny_synth_root, masks


# The tiny model and its training, in the overrides tiny_overrides gives and the demo profile tiny_demo_params writes.
TINY_INPUT = {"height": 64, "width": 32}
TINY_AFE = {"width": 8, "layers": 2}
TINY_MFE = {"seg_channels": 8}
TINY_TRAIN = {"batch_size": 4, "instances_per_id": 2, "warmup_epochs": 0.5, "log_every": 2}


def _dotted(prefix: str, values: Mapping[str, Any]) -> list[str]:
    return [f"{prefix}.{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="session")
def tiny_overrides(tiny_data: tuple[Path, Path]) -> Callable[..., list[str]]:
    """`tiny_overrides(store, *extra)`: the overrides of a two-epoch CPU training of a tiny model on `tiny_data`,
    tracked in `<store>/mlflow.db`; `extra` overrides come last and win."""
    root, masks = tiny_data

    def overrides(store: Path, *extra: str) -> list[str]:
        return [
            "profile=demo",
            f"data.root={root}",
            f"masks.out_dir={masks}",
            "data.workers=0",
            *_dotted("input", TINY_INPUT),
            *_dotted("model.afe", TINY_AFE),
            *_dotted("model.mfe", TINY_MFE),
            "train.epochs=2",
            *_dotted("train", TINY_TRAIN),
            "evaluation.batch_size=16",
            "tracking.system_metrics=false",
            f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
            *extra,
        ]

    return overrides


@pytest.fixture(scope="session")
def tiny_model(
    tiny_overrides: Callable[..., list[str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, tuple[str, ...]]:
    """A model trained once, for one epoch, with `tiny_overrides` (no model logged): (model file, the overrides).

    The training's outputs lie beside the model file (provenance.json, metrics.json) and its store in the same base
    folder: read them, never change them (copy the model file to tmp_path first)."""
    from sanet.train.stage import run_train

    base = tmp_path_factory.mktemp("tiny-model")
    overrides = tuple(tiny_overrides(base, "train.epochs=1", "tracking.log_model=false"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("SANET_PIPELINE_RUN", raising=False)
        patch.chdir(base)  # MLflow's artifacts (./mlruns beside a sqlite store) land here
        result = run_train(load_params(PARAMS_FILE, overrides), out_dir=base / "train", device="cpu", progress=False)
    assert result.model_file is not None
    return result.model_file, overrides


# A one-epoch demo profile with the tiny model (and one one-epoch trial per study), for `dvc repro` and kfp's runner.
TINY_DEMO = {
    "data": {"workers": 0},
    "input": dict(TINY_INPUT),
    "model": {"backbone": "resnet18", "pretrained": "none", "afe": dict(TINY_AFE), "mfe": dict(TINY_MFE)},
    "loss": {"focal_weight": 10.0, "focal_alpha": 0.5},
    "train": {"epochs": 1, **TINY_TRAIN},
    "masks": {"source": "synthetic"},
    "hpo": {"trials": 1, "epochs": 1, "val_ids": 2},
}


@pytest.fixture(scope="session")
def tiny_demo_params() -> Callable[[Path], Path]:
    """`tiny_demo_params(path)`: writes the repository's params.yaml to `path` with `TINY_DEMO` as its demo profile,
    evaluation batches of 16, and neither system metrics nor a logged model; returns `path`."""

    def write(path: Path) -> Path:
        raw = yaml.safe_load(PARAMS_FILE.read_text())
        raw["profiles"]["demo"] = copy.deepcopy(TINY_DEMO)
        raw["evaluation"]["batch_size"] = 16
        raw["tracking"]["system_metrics"] = False
        raw["tracking"]["log_model"] = False
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


# ---- a tiny untrained network -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_network_params() -> Callable[..., Params]:
    """`tiny_network_params(**tracking)`: parameters of a tiny network (resnet18 from scratch, 64 x 32 input, a
    two-layer 8-wide AFE, 8 segmentation channels) without system metrics, with the `tracking` settings given."""

    def params(**tracking: Any) -> Params:
        return resolve(
            {
                "input": dict(TINY_INPUT),
                "model": {"backbone": "resnet18", "pretrained": "none", "afe": dict(TINY_AFE)},
                "tracking": {"system_metrics": False, **tracking},
            },
            overrides=_dotted("model.mfe", TINY_MFE),
        )

    return params


@pytest.fixture(scope="session")
def tiny_network(tiny_network_params: Callable[..., Params]) -> torch.nn.Module:
    """The tiny network, untrained (seed 0), 7 classes, in eval mode; shared: never train or change it."""
    from sanet.model.sanet import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(tiny_network_params(), num_classes=7).eval()
