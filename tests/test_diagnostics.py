"""sanet.evaluation.diagnostics: visibility accuracy, mask variation, the AFE meter, the global-only ranking, the
colour floor, the assembled diagnostics (with and without a mask store), and `sanet evaluate` writing them."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image
from report_helpers import REAL, report_params, report_section, table_rows, write_eval, write_report
from torch import nn

from sanet.config import EvaluationParams, load_params
from sanet.contracts.parts import GLOBAL_INDEX, NUM_PARTS, PARTS
from sanet.data.benchmarks import ImageRecord
from sanet.engine.features import EvaluationResult, Extracted
from sanet.evaluation.diagnostics.afe import AFEShareMeter
from sanet.evaluation.diagnostics.figure import write_diagnostics_figure
from sanet.evaluation.diagnostics.floor import chance_rank1, colour_histogram_floor, person_histogram, resize_nearest
from sanet.evaluation.diagnostics.global_only import global_only_features, global_only_metrics
from sanet.evaluation.diagnostics.masks import mask_variation
from sanet.evaluation.diagnostics.summary import compute_diagnostics, headline_metrics
from sanet.evaluation.diagnostics.visibility import label_visibility, visibility_accuracy
from sanet.evaluation.routing import route_statistics
from sanet.masks.errors import MasksError
from sanet.masks.mask_files import MaskStore, write_folder
from sanet.metrics.distance import euclidean_distance
from sanet.metrics.evaluator import build_evaluator


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SANET_PIPELINE_RUN", raising=False)
    monkeypatch.chdir(tmp_path)


# ---- visibility and masks ----------------------------------------------------------------------------------------


def test_visibility_accuracy_counts_the_confusion_per_part() -> None:
    predicted = np.zeros((4, NUM_PARTS), dtype=bool)
    label = np.zeros((4, NUM_PARTS), dtype=bool)
    predicted[:, 0] = [True, True, False, False]  # head: TP, FP, FN, TN
    label[:, 0] = [True, False, True, False]
    predicted[:, GLOBAL_INDEX] = label[:, GLOBAL_INDEX] = True  # global: always right
    result = visibility_accuracy(predicted, label)
    assert list(result) == list(PARTS)
    assert result["head"] == {
        "accuracy": 0.5,
        "tp": 1,
        "fp": 1,
        "fn": 1,
        "tn": 1,
        "predicted_visible": 0.5,
        "label_visible": 0.5,
    }
    assert result["global"]["accuracy"] == 1.0 and result["global"]["tp"] == 4
    assert result["feet"]["accuracy"] == 1.0 and result["feet"]["tn"] == 4
    assert list(visibility_accuracy(predicted, label, parts=(0, 1, 2, 3))) == list(PARTS[:4])  # hpnet: no global
    with pytest.raises(ValueError, match="must both be"):
        visibility_accuracy(predicted[:, :4], label[:, :4])


def test_label_visibility_reads_the_store_and_names_a_missing_image(tmp_path: Path) -> None:
    masks = np.zeros((2, NUM_PARTS, 8, 4), dtype=np.uint8)
    masks[0, 0, 1, 1] = 1  # one pixel of head: visible
    masks[1, GLOBAL_INDEX] = 1
    write_folder(tmp_path / "masks", "Bench/query", ["a.png", "b.png"], masks, np.zeros((2, 17, 3)), ["person"] * 2)
    store = MaskStore(tmp_path / "masks", tmp_path / "data")
    found = label_visibility(store, [str(tmp_path / "data/Bench/query/a.png"), "Bench/query/b.png"])
    assert found.tolist() == [[True, False, False, False, False], [False, False, False, False, True]]
    with pytest.raises(MasksError, match=r"c\.png"):
        label_visibility(store, ["Bench/query/c.png"])


def test_mask_std_is_zero_for_identical_masks_and_positive_otherwise() -> None:
    rng = np.random.default_rng(0)
    one = rng.random((1, NUM_PARTS, 6, 4)).astype(np.float32)
    same = mask_variation(np.repeat(one, 5, axis=0))
    assert all(entry["std"] == 0.0 for entry in same.values())
    assert same["head"]["mean"] == pytest.approx(float(one[0, 0].mean()), abs=1e-6)
    # half the images all 0, half all 1: every cell has std 0.5 and mean 0.5
    split = np.concatenate([np.zeros((2, NUM_PARTS, 3, 2)), np.ones((2, NUM_PARTS, 3, 2))])
    varied = mask_variation(torch.from_numpy(split).float(), parts=(1,))
    assert varied == {"upper_body": {"std": 0.5, "mean": 0.5}}
    assert mask_variation(rng.random((3, NUM_PARTS, 3, 2)))["feet"]["std"] > 0


# ---- AFE share and routes ----------------------------------------------------------------------------------------


class _Out(NamedTuple):
    features: torch.Tensor


class _DoublingAFE(nn.Module):
    def forward(self, x: torch.Tensor) -> _Out:
        return _Out(2 * x)


class _Model(nn.Module):
    def __init__(self, afe: nn.Module | None) -> None:
        super().__init__()
        self.afe = afe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.afe(x).features if self.afe is not None else x


def test_afe_share_is_the_relative_change_of_the_layer3_features() -> None:
    model = _Model(_DoublingAFE())
    with AFEShareMeter(model) as meter:
        model(torch.rand(3, 4, 2, 2) + 0.1)
        model(torch.rand(2, 4, 2, 2) + 0.1)
    assert meter.available and meter.images == 5 and meter.share() == pytest.approx(1.0)  # ||2x - x|| / ||x||
    model(torch.rand(1, 4, 2, 2))
    assert meter.images == 5  # the hook is gone after the block
    with AFEShareMeter(_Model(None)) as none:
        pass
    assert not none.available and none.share() is None


def test_route_statistics_count_distinct_routes_and_the_top_share() -> None:
    nr = -1
    down_keep = [[nr, 2, nr], [nr, nr, 1]]  # 16>32>32
    up_down = [[nr, 0, nr], [2, nr, nr]]  # 16>8>16
    routing = torch.tensor([down_keep, down_keep, up_down, down_keep])
    stats = route_statistics(routing, {"q": np.array([1, 1, 1, 0], bool), "g": np.array([0, 0, 0, 1], bool)})
    assert stats["all"] == {"images": 4, "distinct_routes": 2, "top_route": "16>32>32", "top_route_share": 0.75}
    assert stats["q"]["distinct_routes"] == 2 and stats["q"]["top_route_share"] == pytest.approx(2 / 3, abs=1e-6)
    assert stats["g"] == {"images": 1, "distinct_routes": 1, "top_route": "16>32>32", "top_route_share": 1.0}


# ---- global-only distance ----------------------------------------------------------------------------------------


def test_global_only_distance_is_euclidean_on_the_global_row() -> None:
    torch.manual_seed(0)
    features = torch.randn(7, NUM_PARTS, 6)
    visibility = torch.rand(7, NUM_PARTS) > 0.3
    pids = torch.tensor([1, 2, 3, 1, 2, 3, 4])
    camids = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    vectors, source = global_only_features(features, visibility, branches=range(NUM_PARTS))
    assert source == "global branch" and torch.equal(vectors, features[:, GLOBAL_INDEX])

    evaluation = EvaluationParams(max_rank=10)
    metrics, _ = global_only_metrics(features, visibility, pids, camids, 3, evaluation, range(NUM_PARTS))
    reference = build_evaluator(evaluation.model_copy(update={"distance": "euclidean"}), num_query=3)
    reference.process({"features": features, "visibility": visibility, "pids": pids, "camids": camids})
    assert metrics == reference.evaluate()
    assert torch.allclose(reference.distmat, euclidean_distance(features[:3, GLOBAL_INDEX], features[3:, GLOBAL_INDEX]))


def test_without_a_global_branch_the_mean_of_visible_parts_stands_in() -> None:
    features = torch.zeros(2, NUM_PARTS, 2)
    features[0, 0], features[0, 1], features[0, 2] = torch.tensor([1.0, 0]), torch.tensor([3.0, 2]), 9.0
    visibility = torch.tensor([[True, True, False, False, False], [False] * NUM_PARTS])
    vectors, source = global_only_features(features, visibility, branches=(0, 1, 2, 3))
    assert "no global branch" in source
    assert vectors.tolist() == [[2.0, 1.0], [0.0, 0.0]]  # part 2 is not visible; nothing visible gives zeros


# ---- the no-network floor ----------------------------------------------------------------------------------------

_COLOURS = {1: (200, 30, 30), 2: (30, 30, 200), 3: (30, 180, 30)}


def _person_image(colour: tuple[int, int, int], background: tuple[int, int, int], height: int = 24) -> torch.Tensor:
    """A (3, height, 8) image: the middle columns 2..5 (the person) in `colour`, the rest `background`."""
    image = torch.empty(3, height, 8, dtype=torch.uint8)
    image[:] = torch.tensor(background, dtype=torch.uint8)[:, None, None]
    image[:, :, 2:6] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
    return image


def _floor_benchmark(root: Path, masks_dir: Path) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Queries of pids 1-3 on a background of another person's colour; gallery of pids 1-3 on grey (and native
    sizes that differ from the stored 8 x 4 masks)."""
    query, gallery = [], []
    for split, records, backgrounds, height in (
        ("query", query, {1: _COLOURS[2], 2: _COLOURS[3], 3: _COLOURS[1]}, 24),
        ("gallery", gallery, dict.fromkeys(_COLOURS, (128, 128, 128)), 16),
    ):
        folder = root / "Bench" / split
        folder.mkdir(parents=True)
        names = []
        for pid, colour in _COLOURS.items():
            name = f"{pid}_{split}.png"
            Image.fromarray(_person_image(colour, backgrounds[pid], height).permute(1, 2, 0).numpy()).save(
                folder / name
            )
            records.append(ImageRecord(str(folder / name), pid, 0 if split == "query" else 1))
            names.append(name)
        labels = np.zeros((len(names), NUM_PARTS, 8, 4), dtype=np.uint8)
        labels[:, GLOBAL_INDEX, :, 1:3] = 1  # the person: the middle half of the width
        if split == "gallery":
            labels[2] = 0  # nobody found in pid 3's gallery image: its whole image counts
        write_folder(masks_dir, f"Bench/{split}", names, labels, np.zeros((len(names), 17, 3)), ["person"] * 3)
    return query, gallery


def test_person_histogram_counts_only_the_masked_pixels() -> None:
    image = _person_image((200, 30, 30), (30, 30, 200))
    mask = np.zeros((8, 4), dtype=np.uint8)
    mask[:, 1:3] = 1
    assert resize_nearest(mask, (24, 8))[0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    histogram, empty = person_histogram(image.numpy(), mask, bins=8)
    assert not empty and histogram.sum() == pytest.approx(1.0) and histogram.shape == (512,)
    assert histogram[(6 * 8 + 0) * 8 + 0] == 1.0  # (200, 30, 30) falls in bins (6, 0, 0)
    whole, empty = person_histogram(image.numpy(), np.zeros((8, 4)), bins=4)
    assert empty and whole.shape == (64,) and sorted(whole[whole > 0].tolist()) == [0.5, 0.5]


def test_the_floor_ranks_the_same_colours_first(tmp_path: Path) -> None:
    query, gallery = _floor_benchmark(tmp_path / "data", tmp_path / "masks")
    store = MaskStore(tmp_path / "masks", tmp_path / "data")
    floor = colour_histogram_floor(query, gallery, store, bins=8, max_rank=10)
    assert floor.distance == "hellinger" and floor.bins == 8 and floor.fallbacks == 1
    # pids 1 and 2 match by their person pixels despite backgrounds of another person's colour; pid 3's gallery
    # image (whole image: half green, half grey) is still the nearest to a green person among the rest
    assert floor.metrics["rank1"] == 1.0 and floor.metrics["mAP"] == 1.0
    assert colour_histogram_floor(query, gallery, store, bins=8, max_rank=10) == floor  # deterministic
    with pytest.raises(MasksError):
        colour_histogram_floor(query, gallery, MaskStore(tmp_path / "elsewhere", tmp_path / "data"))


def test_chance_rank1_follows_the_camera_rule() -> None:
    # query pid 1 cam 0: gallery keeps 4 entries (one pid-1 cam-0 entry removed), 1 match -> 1/4
    # query pid 2 cam 0: 2 matches of 5 -> 2/5; query pid 9 has no match and does not count
    g_pids, g_cams = [1, 1, 2, 2, 3], [0, 1, 1, 1, 1]
    assert chance_rank1([1, 2, 9], g_pids, [0, 0, 0], g_cams) == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert math.isnan(chance_rank1([9], g_pids, [0], g_cams))


# ---- the assembled diagnostics -----------------------------------------------------------------------------------


def _fake_result(num_query: int, num_gallery: int, routing: bool) -> EvaluationResult:
    n = num_query + num_gallery
    generator = torch.Generator().manual_seed(1)
    nr = -1
    routes = torch.tensor([[[nr, 2, nr], [nr, nr, 1]], [[nr, 0, nr], [2, nr, nr]]])
    extracted = Extracted(
        features=torch.randn(n, NUM_PARTS, 4, generator=generator),
        visibility=torch.ones(n, NUM_PARTS, dtype=torch.bool),
        pids=torch.tensor([1, 2, 3, 1, 2, 3][:n]),
        camids=torch.tensor([0] * num_query + [1] * num_gallery),
        routing=routes[torch.arange(n) % 2] if routing else None,
        mask_probs=torch.rand(n, NUM_PARTS, 3, 2, generator=generator),
    )
    metrics = OrderedDict(rank1=0.5, rank3=1.0, rank5=1.0, rank10=1.0, mAP=0.75, mINP=0.6)
    return EvaluationResult("bench", metrics, num_query, num_gallery, extracted, cmc=[0.5, 1.0])


def test_diagnostics_with_the_mask_store_report_everything(tmp_path: Path) -> None:
    query, gallery = _floor_benchmark(tmp_path / "data", tmp_path / "masks")
    store = MaskStore(tmp_path / "masks", tmp_path / "data")
    result = _fake_result(3, 3, routing=True)
    meter = AFEShareMeter(_Model(_DoublingAFE()))
    with meter:
        meter.afe(torch.ones(6, 2, 2, 2))
    found = compute_diagnostics(
        result, query, gallery, store, EvaluationParams(max_rank=10), range(NUM_PARTS), True, "sanet", meter
    )
    assert found["visibility"]["available"] and set(found["visibility"]) == {"available", "query", "gallery"}
    assert found["visibility"]["query"]["global"]["tp"] == 3 and found["visibility"]["query"]["head"]["fp"] == 3
    assert set(found["routing"]["groups"]) == {"partial (query)", "holistic (gallery)"}
    assert found["routing"]["groups"]["partial (query)"]["role"] == "query"
    assert found["afe"] == {"available": True, "share": 1.0, "images": 6}
    assert found["floor"]["rank1"] == 1.0 and found["chance_rank1"] == pytest.approx(1 / 3, abs=1e-6)
    assert found["ranking"]["model"]["rank1"] == 0.5 and found["ranking"]["global_only"]["features"] == "global branch"
    headline = headline_metrics(found)
    assert headline["vis_acc_query/global"] == 1.0 and headline["vis_acc_gallery/head"] == 0.0
    assert headline["routes_distinct"] == 2 and headline["routes_distinct_query"] == 2
    assert headline["afe_share"] == 1.0 and headline["floor_rank1"] == 1.0 and headline["floor_mAP"] == 1.0
    expected = {
        f"{kind}/{part}" for kind in ("vis_acc_query", "vis_acc_gallery", "mask_std", "mask_mean") for part in PARTS
    }
    expected |= {"routes_distinct", "routes_distinct_query", "routes_distinct_gallery", "routes_top_share_query"}
    expected |= {"routes_top_share_gallery", "afe_share", "global_only_rank1", "global_only_mAP", "floor_rank1"}
    assert set(headline) == expected | {"floor_mAP", "chance_rank1"}
    json.dumps(found, allow_nan=False)  # valid JSON, no NaN
    png = write_diagnostics_figure(tmp_path / "d.png", found, "test")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_diagnostics_without_a_mask_store_say_so(tmp_path: Path) -> None:
    query, gallery = _floor_benchmark(tmp_path / "data", tmp_path / "masks")
    store = MaskStore(tmp_path / "nowhere", tmp_path / "data")
    found = compute_diagnostics(
        _fake_result(3, 3, routing=False), query, gallery, store, EvaluationParams(), (0, 1, 2, 3), False, "hpnet"
    )
    for key in ("visibility", "floor"):
        assert found[key]["available"] is False and "sanet masks" in found[key]["note"]
    assert found["routing"]["adaptive"] is False and "hpnet" in found["routing"]["note"]
    assert found["afe"]["share"] is None and "no AFE" in found["afe"]["note"]
    assert found["ranking"]["global_only"]["features"].startswith("mean of the visible part features")
    assert list(found["masks"]["all"]) == list(PARTS[:4])
    headline = headline_metrics(found)
    assert not [k for k in headline if k.startswith(("vis_acc", "floor", "routes", "afe"))]
    assert {"mask_std/head", "global_only_rank1", "global_only_mAP", "chance_rank1"} <= set(headline)
    assert write_diagnostics_figure(tmp_path / "d.png", found, "no store").is_file()


# ---- sanet evaluate ----------------------------------------------------------------------------------------------


def test_evaluate_writes_the_diagnostics_deterministically(tiny_model, params_file: Path, tmp_path: Path) -> None:
    from sanet.evaluation.stage import run_evaluate

    model_file, overrides = tiny_model
    params = load_params(params_file, [*overrides, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    first = run_evaluate(params, "market1501", model_file, out_dir=tmp_path / "a", progress=False)
    run_evaluate(params, "market1501", model_file, out_dir=tmp_path / "b", progress=False)

    for name in ("diagnostics.json", "diagnostics.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    diagnostics = json.loads((tmp_path / "a" / "diagnostics.json").read_text())
    assert diagnostics["visibility"]["available"] and diagnostics["floor"]["available"]
    assert diagnostics["afe"]["available"] and diagnostics["afe"]["share"] >= 0
    assert diagnostics["routing"]["adaptive"] and set(diagnostics["routing"]["groups"]) == {
        "holistic query",
        "holistic gallery",
    }
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert list(metrics)[:6] == ["rank1", "rank3", "rank5", "rank10", "mAP", "mINP"]
    for key in ("vis_acc_query/head", "mask_std/global", "routes_distinct", "afe_share", "global_only_rank1"):
        assert key in metrics
    assert metrics["floor_rank1"] == diagnostics["floor"]["rank1"]
    assert metrics["global_only_mAP"] == diagnostics["ranking"]["global_only"]["mAP"]
    assert {p.name for p in first.files} >= {"diagnostics.json", "diagnostics.png"}

    import mlflow

    run = mlflow.MlflowClient(params.tracking.uri).get_run(first.run_id)
    assert run.data.metrics["market1501/floor_rank1"] == pytest.approx(metrics["floor_rank1"])
    assert run.data.metrics["market1501/vis_acc_gallery/feet"] == pytest.approx(metrics["vis_acc_gallery/feet"])
    artifacts = {
        a.path for a in mlflow.MlflowClient(params.tracking.uri).list_artifacts(first.run_id, "evaluate/market1501")
    }
    assert "evaluate/market1501/diagnostics.json" in artifacts


# ---- the report --------------------------------------------------------------------------------------------------


def test_the_report_shows_the_floor_and_the_diagnostics_and_dashes_without_them(workdir: Path) -> None:
    for name, values in REAL.items():
        write_eval(workdir / "eval", name, values)
    diagnostics = {
        "visibility": {
            "available": True,
            "query": {part: {"accuracy": 0.5 + 0.1 * i} for i, part in enumerate(PARTS)},
            "gallery": {part: {"accuracy": 1.0} for part in PARTS},
        },
        "masks": {"available": True, "all": {part: {"std": 0.0123, "mean": 0.4} for part in PARTS}},
        "routing": {
            "adaptive": True,
            "groups": {
                "partial (query)": {"role": "query", "distinct_routes": 3, "top_route_share": 0.5},
                "holistic (gallery)": {"role": "gallery", "distinct_routes": 1, "top_route_share": 1.0},
            },
        },
        "afe": {"available": True, "share": 0.25},
        "ranking": {"model": {"rank1": 0.7}, "global_only": {"rank1": 0.6}},
        "floor": {"available": True, "rank1": 0.3, "rank3": 0.4, "mAP": 0.2},
        "chance_rank1": 0.05,
    }
    (workdir / "eval" / "partial_ilids_p" / "diagnostics.json").write_text(json.dumps(diagnostics))
    (workdir / "eval" / "partial_ilids_p" / "diagnostics.png").write_bytes(b"\x89PNG")
    markdown = write_report(workdir, report_params(workdir)).path.read_text()

    table1 = table_rows(report_section(markdown, "## Table 1"))
    # Partial-REID (no diagnostics.json: an older evaluation), Partial-iLIDS-O (not evaluated), Partial-iLIDS-P, cropped
    assert table1["No-network floor (colour histogram)"] == ["–"] * 6 + ["30.0", "40.0", "20.0"] + ["–"] * 3
    assert table1["Chance (random ranking)"] == ["–"] * 6 + ["5.0", "–", "–"] + ["–"] * 3
    assert table1["Ours"][6] == "70.0"  # unchanged
    assert table_rows(report_section(markdown, "## Table 2"))["No-network floor (colour histogram)"] == ["–"] * 4

    section = report_section(markdown, "## Method diagnostics")
    visibility, masks, summary = section.split("\n| Benchmark")[1:4]
    assert table_rows("| Benchmark" + visibility)["Partial-iLIDS-P"] == ["50.0", "60.0", "70.0", "80.0", "90.0"]
    assert table_rows("| Benchmark" + visibility)["Partial-REID"] == ["–"] * 5
    assert table_rows("| Benchmark" + masks)["Partial-iLIDS-P"] == ["0.0123"] * 5
    rows = table_rows("| Benchmark" + summary)
    assert rows["Partial-iLIDS-P"] == [
        "3 (50.0%)",
        "1 (100.0%)",
        "0.250",
        "70.0",
        "60.0",
        "30.0",
        "5.0",
        "[diagnostics](../eval/partial_ilids_p/diagnostics.png)",
    ]
    assert rows["Market-1501"] == ["–"] * 8
    assert rows["DukeMTMC-reID"][0] == "not evaluated"
