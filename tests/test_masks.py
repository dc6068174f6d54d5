"""Part masks: keypoints-to-mask geometry, keypoint sources, the store, coverage on the synthetic benchmark, the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from paths import PARAMS_FILE
from PIL import Image

from sanet.cli import main
from sanet.config import ConfigError, Params, load_params
from sanet.contracts.keypoints import COCO_KEYPOINTS, KEYPOINTS_FILE
from sanet.contracts.parts import PARTS
from sanet.data.synthetic.layouts import write_synthetic
from sanet.masks.coverage import coverage_summary, format_coverage
from sanet.masks.errors import MasksError
from sanet.masks.keypoints import CocoJsonSource, ImageItem, flags_to_confidence, nearest_person, read_coco_keypoints
from sanet.masks.mask_files import MaskStore, write_folder
from sanet.masks.part_masks import keypoint_scale, part_masks
from sanet.masks.stage import run_masks

K = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
W, H = 64, 128  # image size of the hand-made person
OUT = (96, 32)  # stored mask size (height, width)

# A frontal pedestrian filling a 64 x 128 box, as COCO-17 (x, y) in image pixels.
STANDING = {
    "nose": (32, 14),
    "left_eye": (35, 12),
    "right_eye": (29, 12),
    "left_ear": (38, 14),
    "right_ear": (26, 14),
    "left_shoulder": (42, 30),
    "right_shoulder": (22, 30),
    "left_elbow": (44, 48),
    "right_elbow": (20, 48),
    "left_wrist": (45, 64),
    "right_wrist": (19, 64),
    "left_hip": (38, 66),
    "right_hip": (26, 66),
    "left_knee": (38, 90),
    "right_knee": (26, 90),
    "left_ankle": (38, 114),
    "right_ankle": (26, 114),
}


def person(drop: tuple[str, ...] = (), confidence: float = 1.0, dy: float = 0.0) -> np.ndarray:
    kps = np.zeros((17, 3), dtype=np.float32)
    for name, (x, y) in STANDING.items():
        kps[K[name]] = (x, y + dy, 0.0 if name in drop else confidence)
    return kps


def at(masks: np.ndarray, part: str, x: float, y: float, size: tuple[int, int] = (W, H)) -> bool:
    """Is the image point (x, y) inside `part`'s stored mask?"""
    row, col = int(y * OUT[0] / size[1]), int(x * OUT[1] / size[0])
    return bool(masks[PARTS.index(part), row, col])


def rows_of(masks: np.ndarray, part: str) -> np.ndarray:
    return np.flatnonzero(masks[PARTS.index(part)].any(axis=1))


HEAD, LOWER, FEET = (
    tuple(n for n in STANDING if n.endswith(("nose", "eye", "ear"))),
    ("left_knee", "right_knee"),
    (
        "left_ankle",
        "right_ankle",
    ),
)


# ---- geometry ----------------------------------------------------------------------------------------------------


def test_every_part_is_where_it_should_be() -> None:
    masks = part_masks(person(), (W, H), OUT, min_confidence=0.3)
    assert masks.shape == (5, *OUT) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    assert at(masks, "head", 32, 14) and at(masks, "head", 32, 6)  # the face and the skull above the eyes
    assert at(masks, "upper_body", 32, 45) and at(masks, "upper_body", 19, 62)  # chest and a hand
    assert at(masks, "lower_body", 26, 80) and at(masks, "lower_body", 38, 102)  # thigh and shin
    assert at(masks, "feet", 26, 117) and at(masks, "feet", 38, 117)
    for part, x, y in [("head", 32, 60), ("upper_body", 26, 100), ("lower_body", 32, 14), ("feet", 32, 70)]:
        assert not at(masks, part, x, y), part
    assert not at(masks, "global", 4, 100)  # background beside the legs
    # top to bottom: head, upper body, lower body, feet; the whole body contains every part
    centres = [rows_of(masks, p).mean() for p in PARTS[:4]]
    assert centres == sorted(centres)
    assert (masks[4] >= masks[:4].max(axis=0)).all()


def test_missing_or_unconfident_keypoints_give_empty_parts() -> None:
    for dropped, empty in [(HEAD, "head"), (FEET, "feet"), (LOWER, "lower_body")]:
        masks = part_masks(person(drop=dropped), (W, H), OUT, min_confidence=0.3)
        assert not masks[PARTS.index(empty)].any(), empty
        assert masks[PARTS.index("upper_body")].any()
    weak = part_masks(person(confidence=0.2), (W, H), OUT, min_confidence=0.3)
    assert not weak.any()
    assert not part_masks(None, (W, H), OUT, min_confidence=0.3).any()


def test_hips_alone_make_no_upper_or_lower_body() -> None:
    hips_only = person(drop=tuple(n for n in STANDING if not n.endswith("hip")))
    masks = part_masks(hips_only, (W, H), OUT, min_confidence=0.3)
    assert not masks[:4].any()


def test_a_crop_keeps_the_parts_it_shows_and_extends_them_to_its_edge() -> None:
    # The top 60 rows of the standing person: the crop cuts the torso above the hips.
    crop_h = 60
    kps = person(drop=tuple(n for n, (_, y) in STANDING.items() if y >= crop_h))
    masks = part_masks(kps, (W, crop_h), OUT, min_confidence=0.3)
    assert masks[PARTS.index("head")].any() and masks[PARTS.index("upper_body")].any()
    assert not masks[PARTS.index("lower_body")].any() and not masks[PARTS.index("feet")].any()
    assert rows_of(masks, "upper_body").max() == OUT[0] - 1  # the hips lie below the crop: torso to the edge


def test_an_occluder_does_not_get_painted_over() -> None:
    # The full box, but everything from the hips down hidden (confidence 0) inside the image.
    hidden = tuple(n for n in STANDING if n.endswith(("hip", "knee", "ankle")))
    masks = part_masks(person(drop=hidden), (W, H), OUT, min_confidence=0.3)
    assert not masks[PARTS.index("lower_body")].any() and not masks[PARTS.index("feet")].any()
    assert rows_of(masks, "upper_body").max() < OUT[0] * 0.6  # the torso is not extrapolated into the occluder


def test_a_sliver_below_min_area_counts_as_not_visible() -> None:
    ankle_cut = person(dy=20.0)  # the feet fall outside the image
    masks = part_masks(ankle_cut, (W, H), OUT, min_confidence=0.3)
    assert not masks[PARTS.index("feet")].any()
    big = part_masks(person(), (W, H), OUT, min_confidence=0.3, min_area=0.9)
    assert not big[:4].any()


def test_masks_do_not_depend_on_the_image_resolution() -> None:
    """The same image at twice the resolution gives the same stored masks (shapes are evaluated in image pixels)."""
    big = person()
    big[:, :2] *= 2
    a = part_masks(person(), (W, H), OUT, min_confidence=0.3)
    b = part_masks(big, (2 * W, 2 * H), OUT, min_confidence=0.3)
    assert (a == b).mean() > 0.999


def test_scale_uses_the_least_foreshortened_length() -> None:
    points = {K[n]: np.array(STANDING[n], dtype=float) for n in STANDING}
    torso = np.linalg.norm(np.array([32, 30]) - np.array([32, 66]))
    arm = np.hypot(2, 18)
    lengths = (torso, 20 / 0.8, 12 / 0.5, 24 / 0.9, 24 / 0.85, arm / 0.6, 12 / 0.3)  # the ears give the most here
    assert keypoint_scale(points, W) == pytest.approx(max(lengths), rel=1e-6)
    del points[K["left_ear"]]
    assert keypoint_scale(points, W) == pytest.approx(torso, rel=1e-6)
    assert keypoint_scale({K["nose"]: np.array([3.0, 4.0])}, W) == pytest.approx(0.6 * W)


def test_wrong_keypoint_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="17, 3"):
        part_masks(np.zeros((18, 3)), (W, H), OUT, min_confidence=0.3)


# ---- keypoint sources ----------------------------------------------------------------------------------------------


def test_the_person_nearest_the_centre_is_used() -> None:
    centred, edge = person(), person()
    edge[:, 0] += 40
    assert nearest_person([edge, centred], (W, H), 0.3) is centred
    nobody = person(confidence=0.1)
    assert nearest_person([nobody], (W, H), 0.3) is None
    assert nearest_person([], (W, H), 0.3) is None


def test_coco_flags_and_confidences(tmp_path: Path) -> None:
    flags = np.array([[1, 2, 2], [3, 4, 1], [0, 0, 0]] + [[5, 5, 2]] * 14, dtype=np.float32)
    assert flags_to_confidence(flags)[:3, 2].tolist() == [1.0, 0.0, 0.0]

    def write(values: list[float], name: str) -> Path:
        coco = {
            "images": [{"id": 1, "file_name": "A/query/x.jpg"}, {"id": 2, "file_name": "A/query/y.jpg"}],
            "annotations": [
                {"id": 1, "image_id": 1, "keypoints": [v for _ in range(17) for v in (1.0, 2.0, 0)]},
                {"id": 2, "image_id": 1, "keypoints": [v for x in values for v in (1.0, 2.0, x)]},
            ],
        }
        path = tmp_path / name
        path.write_text(json.dumps(coco))
        return path

    gt = read_coco_keypoints(write([2] * 16 + [1], "gt.json"))
    assert len(gt["A/query/x.jpg"]) == 2 and gt["A/query/y.jpg"] == []
    assert gt["A/query/x.jpg"][1][:, 2].tolist() == [1.0] * 16 + [0.0]  # flags: 2 visible, 1 hidden
    det = read_coco_keypoints(write([0.9] * 16 + [0.25], "det.json"))
    assert det["A/query/x.jpg"][1][16, 2] == pytest.approx(0.25)  # fractional values are confidences
    source = CocoJsonSource(tmp_path / "gt.json")
    items = [ImageItem("A/query/x.jpg", tmp_path), ImageItem("A/query/z.jpg", tmp_path)]
    found = source.people(items, [])
    assert len(found[0]) == 2 and found[1] is None


def test_bad_keypoint_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MasksError, match="not found"):
        read_coco_keypoints(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text(
        '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "keypoints": [1, 2]}]}'
    )
    with pytest.raises(MasksError, match=r"bad\.json.*expected 51"):
        read_coco_keypoints(tmp_path / "bad.json")


def test_config_requires_a_file_for_coco_json() -> None:
    with pytest.raises(ConfigError, match=r"masks: .*coco_json"):
        load_params(PARAMS_FILE, ["masks.source=coco_json"])
    with pytest.raises(ConfigError, match=r"masks\.source"):
        load_params(PARAMS_FILE, ["masks.source=pifpaf"])


# ---- storage -------------------------------------------------------------------------------------------------------


def test_store_round_trip_by_relative_and_absolute_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    masks = (rng.random((4, 5, 24, 10)) < 0.3).astype(np.uint8)  # width not a multiple of 8
    masks[2] = 0
    kps = rng.random((4, 17, 3)).astype(np.float32)
    files = ["a.jpg", "b.jpg", "c.jpg", "d.png"]
    status = ["person", "person", "no_person", "person"]
    write_folder(tmp_path / "masks", "Bench/query", files, masks, kps, status, {"source": "test"})
    store = MaskStore(tmp_path / "masks", data_root=tmp_path / "data")
    for i, name in enumerate(files):
        np.testing.assert_array_equal(store.masks(f"Bench/query/{name}"), masks[i])
        np.testing.assert_array_equal(store.masks(tmp_path / "data" / "Bench" / "query" / name), masks[i])
        np.testing.assert_array_equal(store.keypoints(f"Bench/query/{name}"), kps[i])
    assert not store.visible("Bench/query/c.jpg").any()
    folder = store.folder("Bench/query")
    assert folder.no_person_rows == {2} and folder.visible.shape == (4, 5)
    assert list(store.folders()) == ["Bench/query"]
    assert "Bench/query/a.jpg" in store and "Bench/query/zzz.jpg" not in store
    with pytest.raises(MasksError, match=r"zzz\.jpg"):
        store.masks("Bench/query/zzz.jpg")
    with pytest.raises(MasksError, match="not under the data root"):
        store.masks(tmp_path / "elsewhere" / "a.jpg")


def test_store_writes_are_deterministic_and_leave_no_stale_files(tmp_path: Path) -> None:
    masks = np.ones((2, 5, 8, 8), dtype=np.uint8)
    kps = np.zeros((2, 17, 3), dtype=np.float32)
    first = write_folder(tmp_path, "B/q", ["x.jpg", "y.jpg"], masks, kps, ["person"] * 2)
    names = sorted(p.name for p in first.iterdir())
    write_folder(tmp_path, "B/q", ["x.jpg", "y.jpg"], masks, kps, ["person"] * 2)
    assert sorted(p.name for p in first.iterdir()) == names  # same content, same files (dvc repro is a no-op)
    write_folder(tmp_path, "B/q", ["x.jpg", "y.jpg"], masks * 0, kps, ["no_person"] * 2)
    after = sorted(p.name for p in first.iterdir())
    assert len(after) == 3 and after != names and not [p for p in after if p.endswith(".tmp")]
    assert not MaskStore(tmp_path).visible("B/q/x.jpg").any()


def test_a_damaged_store_says_rerun(tmp_path: Path) -> None:
    path = write_folder(tmp_path, "B/q", ["x.jpg"], np.ones((1, 5, 8, 8), np.uint8), np.zeros((1, 17, 3)), ["person"])
    index = json.loads((path / "index.json").read_text())
    index["files"].append("y.jpg")
    (path / "index.json").write_text(json.dumps(index))
    with pytest.raises(MasksError, match="rerun `sanet masks`"):
        MaskStore(tmp_path).masks("B/q/x.jpg")


# ---- the stage on the synthetic benchmark --------------------------------------------------------------------------


def demo_params(*overrides: str) -> Params:
    return load_params(PARAMS_FILE, ["profile=demo", *overrides])


@pytest.fixture(scope="module")
def small(tiny_synth_with, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny benchmark with more partial probes: enough per benchmark that the coverage test's comparison of
    queries with galleries (fewer lower bodies and feet in the partial queries) is not left to a handful of crops."""
    root = tmp_path_factory.mktemp("masks") / "data"
    synth = tiny_synth_with(partial={"partial_reid_ids": 12, "partial_reid_images": 2, "partial_ilids_ids": 16})
    write_synthetic(root, synth, progress=False)
    return root


@pytest.fixture(scope="module")
def stored(small: Path) -> tuple[Path, object]:
    out = small.parent / "masks"
    report = run_masks(
        demo_params(),
        "all",
        root=small,
        out_dir=out,
        coverage_file=out / "cov.json",
        metrics_file=out / "sum.json",
        progress=False,
        track=False,
    )
    return out, report


def test_stage_stores_every_image_once(small: Path, stored) -> None:
    out, report = stored
    assert report.source == "synthetic" and report.no_person == 0 and report.not_listed == 0
    from sanet.data.benchmarks import BENCHMARKS, build_benchmark

    keys = {
        Path(r.path).relative_to(small).as_posix()
        for name in BENCHMARKS
        for split in ("train", "query", "gallery")
        for r in getattr(build_benchmark(name, small), split)
    }
    assert report.images == len(keys)  # the shared Partial-REID gallery is stored once
    store = MaskStore(out, small)
    assert all(store.masks(k).shape == (5, 96, 32) for k in sorted(keys))
    assert report.images_per_second > 0 and report.store_bytes > 0


def test_partial_queries_show_fewer_lower_bodies_and_feet_than_their_galleries(stored) -> None:
    out, report = stored
    coverage = json.loads((out / "cov.json").read_text())
    assert coverage == report.coverage
    for name in ("partial_reid", "partial_reid_cropped", "partial_ilids_p", "partial_ilids_o"):
        query, gallery = coverage[name]["query"], coverage[name]["gallery"]
        assert query["images"] > 0 and gallery["images"] > 0
        for part in ("lower_body", "feet"):
            assert query[part] < gallery[part], (name, part, query, gallery)
        assert gallery["global"] == 1.0 and query["global"] == 1.0
    for name in ("market1501", "dukemtmc"):
        assert coverage[name]["query"]["upper_body"] == 1.0
    table = format_coverage(coverage)
    assert "partial_ilids_o" in table and "lower_body" in table


def test_synthetic_masks_match_the_ground_truth_keypoints(small: Path, stored) -> None:
    out, _ = stored
    coco = json.loads((small / "Partial-REID_Dataset" / KEYPOINTS_FILE).read_text())
    image = next(i for i in coco["images"] if i["file_name"].startswith("whole_body_images/"))
    ann = next(a for a in coco["annotations"] if a["image_id"] == image["id"])
    kps = np.array(ann["keypoints"], dtype=np.float32).reshape(17, 3)
    expected = part_masks(flags_to_confidence(kps), (image["width"], image["height"]), (96, 32), 0.3, 0.005)
    np.testing.assert_array_equal(MaskStore(out).masks(f"Partial-REID_Dataset/{image['file_name']}"), expected)


def test_missing_keypoint_file_is_one_clear_error(small: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(small / "Partial_iLIDS", root / "Partial_iLIDS")
    (root / "Partial_iLIDS" / KEYPOINTS_FILE).unlink()
    with pytest.raises(MasksError, match=r"keypoints_coco17\.json[\s\S]*sanet synth"):
        run_masks(demo_params(), "partial_ilids_p", root=root, out_dir=tmp_path / "m", progress=False, track=False)


def test_coco_json_source_counts_unlisted_images(small: Path, tmp_path: Path) -> None:
    src = json.loads((small / "Partial_iLIDS" / KEYPOINTS_FILE).read_text())
    keep = {i["id"] for i in src["images"] if i["file_name"].startswith("Probe/")}
    coco = {
        "images": [{**i, "file_name": f"Partial_iLIDS/{i['file_name']}"} for i in src["images"] if i["id"] in keep],
        "annotations": [a for a in src["annotations"] if a["image_id"] in keep],
    }
    (tmp_path / "kps.json").write_text(json.dumps(coco))
    params = demo_params("masks.source=coco_json", f"masks.coco_json={tmp_path / 'kps.json'}")
    report = run_masks(
        params,
        "partial_ilids_p",
        small,
        tmp_path / "m",
        tmp_path / "c.json",
        metrics_file=tmp_path / "s.json",
        progress=False,
        track=False,
    )
    assert report.not_listed == len(keep)  # the gallery is not in the file: empty masks, counted
    assert report.coverage["partial_ilids_p"]["gallery"]["global"] == 0.0
    assert report.coverage["partial_ilids_p"]["query"]["head"] == 1.0


# ---- the command line ----------------------------------------------------------------------------------------------


@pytest.fixture
def in_repo(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)


def test_cli_masks_and_preview(
    in_repo, small: Path, tmp_path: Path, template_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, cov, png = tmp_path / "m", tmp_path / "cov.json", tmp_path / "sheet.png"
    db = tmp_path / "mlflow.db"
    shutil.copy(template_db, db)
    argv = ["masks", "--benchmark", "all", "--root", str(small), "--out", str(out), "--quiet"]
    argv += ["--set", f"tracking.uri=sqlite:///{db}", "--set", "tracking.system_metrics=false"]
    assert (
        main(
            [
                *argv,
                "--set",
                "profile=demo",
                "--set",
                f"masks.coverage_file={cov}",
                "--set",
                f"masks.metrics_file={cov}.sum",
                "--preview",
                str(png),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "images/s" in text.splitlines()[-3] and "partial_reid_cropped" in text and cov.is_file()
    # one MLflow run for the stage, with the coverage as metrics and as a file
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("sanet").experiment_id], "tags.stage = 'masks'")
    assert run.info.status == "FINISHED" and f"MLflow run {run.info.run_id}" in text.splitlines()
    assert run.data.metrics["masks/market1501/query/head"] == json.loads(cov.read_text())["market1501"]["query"]["head"]
    with Image.open(png) as sheet:
        assert sheet.width > 200 and sheet.height > 14 * 100  # one row per benchmark split
    # preview alone reads the stored masks
    assert main(["masks", "--root", str(small), "--out", str(out), "--preview", str(tmp_path / "p2.png")]) == 0
    assert (tmp_path / "p2.png").is_file()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--benchmark", "market1501"], "expected layout"),
        (["--benchmark", "nope"], "unknown benchmark 'nope'"),
        (["--preview", "x.png"], "no masks are stored"),
        (["--benchmark", "all", "--set", "masks.height=4"], "masks.height"),
    ],
)
def test_cli_errors_are_one_message_and_exit_2(
    in_repo, tmp_path: Path, argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    (root / "PartialILIDS").mkdir(parents=True)  # a root with one (empty) dataset folder
    code = main(["masks", "--root", str(root), "--out", str(tmp_path / "m"), "--set", "profile=demo", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("sanet masks: error:") and fragment in err and "Traceback" not in err


def test_cli_needs_benchmark_or_preview(in_repo) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["masks"])
    assert exc.value.code == 2


def test_dvc_stage_declares_the_mask_outputs(repo_root: Path) -> None:
    import yaml

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["masks"]
    params = load_params(repo_root / "params.yaml")
    assert stage["cmd"].startswith("sanet masks --benchmark all")
    assert "data" in stage["deps"] and "sanet/masks" in stage["deps"]
    assert stage["outs"] == [params.masks.out_dir, {params.masks.coverage_file: {"cache": False}}]
    assert stage["metrics"] == [{params.masks.metrics_file: {"cache": False}}]  # the summary: a few columns
    assert all(p.startswith(("masks.", "profile", "data.", "profiles.")) for p in stage["params"])
    assert os.path.exists(repo_root / "sanet" / "masks" / "stage.py")


def test_coverage_summary_pools_every_split_by_its_images() -> None:
    """The stage's DVC metric: seven numbers, not one per benchmark, split and part (120 on the demo)."""
    parts = {"head": 1.0, "upper_body": 1.0, "lower_body": 0.5, "feet": 0.0, "global": 1.0}
    coverage = {
        "a": {"query": {"images": 10, "no_person": 2, **parts}},
        "b": {"gallery": {"images": 30, "no_person": 0, **parts, "feet": 1.0, "lower_body": 1.0}},
    }
    summary = coverage_summary(coverage)
    assert list(summary) == ["images", "no_person_rate", *(f"visible/{part}" for part in parts)]
    assert summary["images"] == 40 and summary["no_person_rate"] == 0.05
    assert summary["visible/feet"] == 0.75 and summary["visible/lower_body"] == 0.875
    assert summary["visible/head"] == 1.0
    assert coverage_summary({}) == {"images": 0, "no_person_rate": 0.0, **{f"visible/{p}": 0.0 for p in parts}}
