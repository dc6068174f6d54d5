"""The synthetic benchmark: determinism, the real layouts and protocols through the loaders, keypoints, safety."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sanet.config import SynthParams, load_params
from sanet.contracts.datasets import DATASET_DIRS, MARKER_FILE
from sanet.contracts.keypoints import KEYPOINTS_FILE
from sanet.data.benchmarks import BENCHMARKS, build_benchmark
from sanet.data.synthetic.contact_sheet import contact_sheet
from sanet.data.synthetic.layouts import write_synthetic
from sanet.data.synthetic.people import Identity
from sanet.infra.errors import OverwriteError


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def synth(tiny_synth_with) -> SynthParams:
    """The tiny benchmark of tests/conftest.py with a seed other than the default (the marker must record the one
    given), two images per Partial-REID identity (the per-identity counts), and more partial identities (what most
    crops or occluders do to the feet and the image heights is asserted over them)."""
    return tiny_synth_with(seed=3, partial={"partial_reid_ids": 4, "partial_reid_images": 2, "partial_ilids_ids": 5})


@pytest.fixture(scope="module")
def tiny(synth: SynthParams, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "data"
    write_synthetic(out, synth, progress=False)
    return out


def test_same_seed_gives_byte_identical_files(synth: SynthParams, tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_synthetic(again, synth, progress=False)
    first, second = _digest(tiny), _digest(again)
    assert len(first) > 100
    assert first == second


def test_another_seed_gives_other_images(synth: SynthParams, tiny: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_synthetic(other, synth.model_copy(update={"seed": 4}), progress=False)
    a, b = _digest(tiny), _digest(other)
    shared = set(a) & set(b)
    assert sum(a[k] == b[k] for k in shared) < len(shared) // 10


def test_market_layout_and_protocol(synth: SynthParams, tiny: Path) -> None:
    bench = build_benchmark("market1501", tiny, verify_images=True)
    m = synth.market
    assert bench.num_train_pids == m.train_ids
    assert sorted({r.pid for r in bench.train}) == list(range(m.train_ids))  # relabelled
    query_pids = {r.pid for r in bench.query}
    assert len(query_pids) == m.test_ids and len(bench.query) == 2 * m.test_ids
    gallery = Counter(r.pid for r in bench.gallery)
    assert gallery[0] == m.distractors  # distractors stay
    assert -1 not in gallery and bench.num_junk == m.junk  # junk is dropped, and counted
    assert set(gallery) - {0} == query_pids
    assert {r.camid for r in bench.train + bench.query + bench.gallery} <= set(range(6))
    # Every query has a true match in another camera, so none is skipped by the evaluation protocol.
    for q in bench.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in bench.gallery)
    # Train and test identities are disjoint (the raw pids in the file names).
    raw = {int(Path(r.path).name.split("_")[0]) for r in bench.train}
    assert not raw & {r.pid for r in bench.query}


def test_duke_layout_uses_eight_cameras_and_gallery_only_identities(synth: SynthParams, tiny: Path) -> None:
    bench = build_benchmark("dukemtmc", tiny, verify_images=True)
    d = synth.duke
    assert bench.num_train_pids == d.train_ids
    query_pids = {r.pid for r in bench.query}
    gallery_pids = {r.pid for r in bench.gallery}
    assert len(query_pids) == d.test_ids
    assert len(gallery_pids - query_pids) == d.gallery_only_ids
    assert {r.camid for r in bench.train + bench.query + bench.gallery} <= set(range(8))
    heights = {Image.open(r.path).height for r in bench.gallery}
    assert len(heights) > 1  # Duke's boxes vary in size
    for q in bench.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in bench.gallery)


@pytest.mark.parametrize(
    ("name", "ids_key", "per_id_key"),
    [
        ("partial_reid", "partial_reid_ids", "partial_reid_images"),
        ("partial_reid_cropped", "partial_reid_ids", "partial_reid_images"),
        ("partial_ilids_p", "partial_ilids_ids", None),  # one probe and one gallery image per identity
        ("partial_ilids_o", "partial_ilids_ids", None),
    ],
    ids=["partial_reid", "partial_reid_cropped", "partial_ilids_p", "partial_ilids_o"],
)
def test_partial_layouts_and_protocol(
    synth: SynthParams, tiny: Path, name: str, ids_key: str, per_id_key: str | None
) -> None:
    ids = getattr(synth.partial, ids_key)
    per_id = getattr(synth.partial, per_id_key) if per_id_key else 1
    bench = build_benchmark(name, tiny, verify_images=True)
    assert bench.train == []
    assert len(bench.query) == len(bench.gallery) == ids * per_id
    assert {r.pid for r in bench.query} == {r.pid for r in bench.gallery} == set(range(1, ids + 1))
    assert {r.camid for r in bench.query} == {0} and {r.camid for r in bench.gallery} == {1}


def test_partial_images_vary_in_vertical_extent(synth: SynthParams, tiny: Path) -> None:
    base = tiny / "Partial-REID_Dataset"
    whole = {Image.open(p).size for p in (base / "whole_body_images").glob("*.jpg")}
    partial = [Image.open(p).size for p in (base / "partial_body_images").glob("*.jpg")]
    assert whole == {(synth.image_width, synth.image_height)}
    heights = [h for _, h in partial]
    assert max(heights) < synth.image_height and len(set(heights)) > len(heights) // 2


def test_ilids_dsr_probe_is_the_fpr_probe_without_its_occluder(synth: SynthParams, tiny: Path) -> None:
    for pid in range(1, synth.partial.partial_ilids_ids + 1):
        fpr = Image.open(tiny / "PartialILIDS" / "Probe" / f"{pid:04d}.jpg")
        dsr = Image.open(tiny / "Partial_iLIDS" / "Probe" / f"{pid:03d}.jpg")
        assert dsr.width == fpr.width and dsr.height < fpr.height
        a = np.asarray(fpr.crop((0, 0, dsr.width, dsr.height)), dtype=np.float32)
        assert np.abs(a - np.asarray(dsr, dtype=np.float32)).mean() < 3.0  # same pixels up to JPEG
        same_gallery = (tiny / "PartialILIDS" / "Gallery" / f"{pid:04d}.jpg").read_bytes()
        assert same_gallery == (tiny / "Partial_iLIDS" / "Gallery" / f"{pid:03d}.jpg").read_bytes()


def _coco(folder: Path) -> tuple[dict, dict]:
    coco = json.loads((folder / KEYPOINTS_FILE).read_text())
    by_image = {a["image_id"]: a for a in coco["annotations"]}
    return coco, by_image


@pytest.mark.parametrize("folder", DATASET_DIRS)
def test_every_image_has_coco17_keypoints_within_bounds(tiny: Path, folder: str) -> None:
    root = tiny / folder
    coco, by_image = _coco(root)
    assert len(coco["categories"][0]["keypoints"]) == 17
    listed = {img["file_name"] for img in coco["images"]}
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.jpg")}
    assert listed == on_disk
    for img in coco["images"]:
        kps = np.array(by_image[img["id"]]["keypoints"], dtype=np.float64).reshape(17, 3)
        assert set(kps[:, 2]) <= {0, 1, 2}
        labelled = kps[kps[:, 2] > 0]
        assert (labelled[:, 0] >= 0).all() and (labelled[:, 0] < img["width"]).all()
        assert (labelled[:, 1] >= 0).all() and (labelled[:, 1] < img["height"]).all()
        assert by_image[img["id"]]["num_keypoints"] == len(labelled)
        with Image.open(root / img["file_name"]) as im:
            assert im.size == (img["width"], img["height"])


def test_keypoints_follow_cropping_and_occlusion(tiny: Path) -> None:
    coco, by_image = _coco(tiny / "Partial-REID_Dataset")
    ankles = {"whole": [], "partial": [], "occluded": []}
    for img in coco["images"]:
        kps = np.array(by_image[img["id"]]["keypoints"]).reshape(17, 3)
        kind = img["file_name"].split("_")[0]
        ankles[kind].append(kps[15:17, 2].max())
    assert all(v > 0 for v in ankles["whole"])  # a holistic image labels both feet
    assert np.mean([v == 0 for v in ankles["partial"]]) > 0.5  # most partial crops cut the feet off
    assert np.mean([v == 1 for v in ankles["occluded"]]) > 0.5  # occluded feet are labelled but hidden


def test_identities_need_more_than_one_colour(params_file: Path) -> None:
    params = load_params(params_file).synth
    identities = [Identity.sample(params.seed, 1, pid) for pid in range(1, params.market.train_ids + 1)]
    tops = Counter(i.top for i in identities)
    assert len(tops) < len(identities) / 2  # many identities share a top colour...
    # ...but the combination of all their cues tells them apart (at 256 identities, two pairs share top, pattern,
    # bottom, style, accessory and hair, and differ in skin, shoes, sleeves or build)
    cues = {tuple(value for name, value in vars(i).items() if name != "pid") for i in identities}
    assert len(cues) == len(identities)


def test_marker_records_the_parameters(synth: SynthParams, tiny: Path) -> None:
    marker = json.loads((tiny / MARKER_FILE).read_text())
    assert marker["params"]["seed"] == synth.seed
    assert sum(marker["images"].values()) == len(list(tiny.rglob("*.jpg")))


def test_regenerating_replaces_only_the_benchmark_folders(synth: SynthParams, tmp_path: Path) -> None:
    out = tmp_path / "data"
    write_synthetic(out, synth, progress=False)
    stale = out / "Market-1501-v15.09.15" / "query" / "9999_c1s1_000001_01.jpg"
    stale.write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    write_synthetic(out, synth, progress=False)
    assert not stale.exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_refuses_to_overwrite_real_data(synth: SynthParams, tmp_path: Path) -> None:
    real = tmp_path / "data" / "Market-1501-v15.09.15" / "query"
    real.mkdir(parents=True)
    (real / "0001_c1s1_000001_00.jpg").write_bytes(b"precious")
    with pytest.raises(OverwriteError, match="looks like real data"):
        write_synthetic(tmp_path / "data", synth, progress=False)
    assert (real / "0001_c1s1_000001_00.jpg").read_bytes() == b"precious"


def test_contact_sheet_shows_every_column(synth: SynthParams) -> None:
    sheet = contact_sheet(synth, identities=2, cell_height=64)
    assert sheet.size == (12 * (32 + 4) + 4, 16 + 2 * (64 + 4))
    arr = np.asarray(sheet)
    for col in range(12):
        x = 4 + col * 36 + 16
        assert (arr[20:80, x] != 255).any(), f"column {col} is empty"


def test_all_six_benchmarks_are_generated(tiny: Path) -> None:
    from sanet.data.benchmarks import available_benchmarks

    assert available_benchmarks(tiny) == list(BENCHMARKS)


@pytest.mark.slow
def test_default_benchmark_reproduces_data_dvc(repo_root: Path, tmp_path: Path) -> None:
    """`sanet synth --out data` with the repository's params gives exactly what data.dvc pins."""
    dvc = [sys.executable, "-m", "dvc"]
    shutil.copy(repo_root / "data.dvc", tmp_path / "data.dvc")
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    write_synthetic(tmp_path / "data", load_params(repo_root / "params.yaml").synth, progress=False)
    # `dvc commit` without --force refuses a changed output: it succeeds only when the hash matches.
    commit = subprocess.run([*dvc, "commit", "data.dvc"], cwd=tmp_path, capture_output=True, text=True)
    assert commit.returncode == 0, commit.stderr
    status = subprocess.run([*dvc, "status", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}
