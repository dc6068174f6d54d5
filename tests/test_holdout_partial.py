"""Partial queries of the held-out identities (sanet.data.holdout, sanet.train.validation) and the trial score.

Trials must be scored on what the method is for, partial probes, and only on identities held out of training:
never a training identity, never a test benchmark. The crops are deterministic, in memory, and need no labels.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from mlflow import MlflowClient
from paths import PARAMS_FILE
from PIL import Image
from torch import nn

from sanet.config import load_params
from sanet.data.benchmarks import ImageRecord, build_benchmark
from sanet.data.dataset import ImageDataset
from sanet.data.holdout import PARTIAL_EXTENT, holdout_split, partial_queries
from sanet.data.partial import RowSpan
from sanet.data.transforms import TestTransform, decode_image
from sanet.hpo.settings import study_name
from sanet.hpo.worker import run_worker
from sanet.train.validation import HELD_OUT_KEYS, SCORE, evaluate_validation


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MLFLOW_TRACKING_URI", "SANET_HPO_STORAGE", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _toy(
    folder: Path, cameras: dict[int, list[int]], grey: dict[tuple[int, int], int] | None = None
) -> SimpleNamespace:
    """A training split of real PNG files: person id -> the camera of each image; heights vary from image to image.

    `grey[(pid, k)]` is the grey level of the k-th image of `pid` (default: a per-image level)."""
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for pid, cams in cameras.items():
        for k, cam in enumerate(cams):
            path = folder / f"{pid:04d}_c{cam}_{k}.png"
            level = (grey or {}).get((pid, k), (37 * pid + 11 * k) % 256)
            Image.new("RGB", (16, 40 + 7 * ((pid + k) % 5)), (level, level, level)).save(path)
            train.append(ImageRecord(str(path), pid, cam))
    return SimpleNamespace(name="toy", root=folder, train=sorted(train))


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_every_held_out_image_yields_one_seeded_partial_crop_and_nothing_else(tmp_path: Path) -> None:
    bench = _toy(tmp_path / "data", {pid: [0, 0, 1, 2] for pid in range(8)} | {8: [3, 3]})
    before = _files(tmp_path)
    split = holdout_split(bench, 3, seed=4)
    queries = partial_queries(split)

    # crops of held-out images only: every one of them once, never a training image or identity
    assert [q.record for q in queries] == split.images == [*split.query, *split.gallery]
    assert {q.record.pid for q in queries} == set(split.held_out_ids)
    assert {q.record.path for q in queries}.isdisjoint(r.path for r in split.train)
    assert {q.record.path for q in queries} <= {r.path for r in bench.train}  # the training split: no test benchmark
    low, high = PARTIAL_EXTENT
    for query in queries:
        rows = Image.open(query.record.path).size[1]
        assert query.span.top >= 0 and query.span.bottom <= rows
        assert low * rows - 1 <= query.span.height <= high * rows + 1
    assert sum(q.span.top == 0 for q in queries) > len(queries) / 2  # mostly upper bodies

    # deterministic: the same crops for the same seed, here and in a fresh process; another seed draws others
    assert partial_queries(holdout_split(bench, 3, seed=4)) == queries
    records = json.dumps([list(r) for r in bench.train])
    code = (
        "import json, sys; from types import SimpleNamespace; from sanet.data.benchmarks import ImageRecord; "
        "from sanet.data.holdout import holdout_split, partial_queries; "
        f"b = SimpleNamespace(name='toy', root=None, train=[ImageRecord(*r) for r in json.loads({records!r})]); "
        "crops = partial_queries(holdout_split(b, 3, 4)); "
        "print(json.dumps([[q.record.path, q.span.top, q.span.height] for q in crops]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout) == [[q.record.path, q.span.top, q.span.height] for q in queries], done.stderr
    other = partial_queries(holdout_split(bench, 3, seed=5))
    assert [q.span for q in other] != [q.span for q in queries]
    assert _files(tmp_path) == before  # in memory: nothing written beside the images


def test_the_test_dataset_crops_in_memory_and_serves_no_labels_but_identity(tmp_path: Path) -> None:
    bench = _toy(tmp_path / "data", {0: [0, 1], 1: [0, 1]})
    records = bench.train
    transform = TestTransform((64, 32))
    spans = [RowSpan(0, 20), None, RowSpan(5, 30), RowSpan(10, 25)]
    cropped = ImageDataset(records, transform, spans)
    holistic = ImageDataset(records, transform)
    for index, (record, span) in enumerate(zip(records, spans, strict=True)):
        image = decode_image(record.path)
        item = cropped[index]
        assert set(item) == {"images", "pids", "camids", "indices"}  # no masks: a query needs none
        expected = transform(image[:, span.top : span.bottom]) if span else transform(image)
        assert torch.equal(item["images"], expected)  # stretched to the input size like any test image
        assert torch.equal(holistic[index]["images"], transform(image))
        assert (int(item["pids"]), int(item["camids"])) == (record.pid, record.camid)
    with pytest.raises(ValueError, match="outside"):
        ImageDataset(records[:1], transform, [RowSpan(30, 40)])[0]
    with pytest.raises(ValueError, match="2 row spans for 4 records"):
        ImageDataset(records, transform, spans[:2])


class _Grey(nn.Module):
    """A model whose five part features are an image's mean colour, all visible (the normal eval path's inputs)."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        colour = images.mean(dim=(2, 3))
        return {
            "features": colour[:, None].expand(-1, 5, -1),
            "visibility": torch.ones(len(images), 5, dtype=torch.bool),
        }


def _evaluate(bench: SimpleNamespace, num_ids: int) -> dict[str, float]:
    params = load_params(PARAMS_FILE, ["profile=demo", "data.workers=0"])
    split = holdout_split(bench, num_ids, seed=0)
    return dict(evaluate_validation(_Grey(), split, params, torch.device("cpu")).metrics)


def test_partial_and_holistic_queries_rank_against_the_held_out_images_under_the_camera_rule(tmp_path: Path) -> None:
    # two held-out identities seen by two cameras; the training identities have one camera (never held out)
    cameras = {0: [0, 1], 1: [0, 1], 2: [2], 3: [3]}
    # each identity's two images look alike: every query, holistic or partial, finds its identity first
    alike = _evaluate(_toy(tmp_path / "alike", cameras, {(0, 0): 10, (0, 1): 12, (1, 0): 200, (1, 1): 202}), 2)
    assert list(alike)[-len(HELD_OUT_KEYS) :] == list(HELD_OUT_KEYS)
    assert {k: alike[k] for k in HELD_OUT_KEYS} == dict.fromkeys(HELD_OUT_KEYS, 1.0)
    # each image is closest to the other identity's image of its camera: a query's own image (or its crop's source)
    # would be its first match if the camera rule did not remove it, so Rank-1 is 0 for the holistic and the partial
    crossed = _evaluate(_toy(tmp_path / "crossed", cameras, {(0, 0): 10, (0, 1): 200, (1, 0): 20, (1, 1): 190}), 2)
    assert crossed["holistic_rank1"] == crossed["partial_rank1"] == 0.0
    # matches at ranks 3, 3, 2, 2 of the three gallery images left to each query; crops of one-colour images look
    # like their sources, so the partial queries rank as the holistic ones
    assert crossed["holistic_mAP"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    assert crossed["partial_mAP"] == pytest.approx(crossed["holistic_mAP"])
    assert crossed[SCORE] == pytest.approx((crossed["holistic_mAP"] + crossed["partial_mAP"]) / 2)


def test_the_benchmark_protocol_alone_has_no_held_out_metrics(tmp_path: Path) -> None:
    bench = _toy(tmp_path / "data", {0: [0, 1], 1: [0, 1], 2: [2], 3: [3]})
    query = [bench.train[0], bench.train[2]]  # camera 0 of identities 0 and 1; their camera-1 images are the matches
    benchmark = SimpleNamespace(name="toy", query=query, gallery=[r for r in bench.train if r not in query])
    params = load_params(PARAMS_FILE, ["profile=demo", "data.workers=0"])
    metrics = evaluate_validation(_Grey(), benchmark, params, torch.device("cpu")).metrics
    assert set(metrics) == {"rank1", "rank3", "rank5", "rank10", "mAP", "mINP"}


def test_a_trial_is_scored_by_the_mean_of_holistic_and_partial_map_on_held_out_identities(
    tiny_overrides,
    template_db: Path,
    tmp_path: Path,
) -> None:
    shutil.copy(template_db, tmp_path / "mlflow.db")
    overrides = tiny_overrides(
        tmp_path,
        "tracking.log_model=false",
        "hpo.trials=1",
        "hpo.epochs=2",
        "hpo.val_ids=2",
        f"hpo.storage=sqlite:///{tmp_path / 'optuna.db'}",
        f"hpo.out_dir={tmp_path / 'trials'}",
    )
    params = load_params(PARAMS_FILE, overrides)
    worker = run_worker(params, "triplet_weight", progress=False, device="cpu")
    assert worker.completed == 1

    (trial,) = optuna.load_study(study_name=study_name(params, "triplet_weight"), storage=params.hpo.storage).trials
    attrs = trial.user_attrs
    assert {"holistic_mAP", "partial_mAP", "partial_rank1", "mAP", "epoch_scores"} <= set(attrs)
    assert trial.value == pytest.approx((attrs["holistic_mAP"] + attrs["partial_mAP"]) / 2)
    assert trial.value == attrs["epoch_scores"][-1]  # hpo.score_epochs absent or 1: the last epoch's score
    assert [trial.intermediate_values[e] for e in (1, 2)] == attrs["epoch_scores"]  # the pruner sees the score too
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(attrs["mlflow_run_id"])
    for key in ("holistic_mAP", "partial_mAP", "partial_rank1", "score"):
        assert f"val/{key}" in run.data.metrics and f"final/{key}" in run.data.metrics, key
    assert run.data.metrics["final/score"] == pytest.approx(trial.value)

    # what it was scored on: crops of training-split images of the held-out identities, none of the test benchmark
    market = build_benchmark(params.data.train, params.data.root)
    split = holdout_split(market, params.hpo.val_ids, params.seed)
    crops = {q.record.path for q in partial_queries(split)}
    assert crops <= {r.path for r in market.train} and crops.isdisjoint(r.path for r in split.train)
    assert crops.isdisjoint(r.path for r in [*market.query, *market.gallery])
