"""Tests of the real-benchmark loaders on tiny fake layouts written under ``tmp_path``."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from PIL import Image

from sanet.data.benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    CorruptImageError,
    DukeMTMCreID,
    EmptyRootError,
    EmptySplitError,
    FileNameError,
    ImageRecord,
    Market1501,
    MissingLayoutError,
    PartialILIDSO,
    PartialILIDSP,
    PartialREID,
    PartialREIDCropped,
    available_benchmarks,
    build_benchmark,
    format_statistics,
    read_image,
)

WriteImages = Callable[[Path, Iterable[str]], None]


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 16), (200, 30, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


JPEG = _jpeg_bytes()


@pytest.fixture
def write_images() -> WriteImages:
    """Write a small valid JPEG (8 wide, 16 high) under each given name in ``folder``."""

    def write(folder: Path, names: Iterable[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_bytes(JPEG)

    return write


MARKET_TRAIN = [
    "0010_c6s1_000001_00.jpg",
    "0002_c1s1_000451_03.jpg",
    "0007_c2s1_000100_01.jpg",
    "0007_c3s2_0001_02.jpg",
]
MARKET_QUERY = ["0001_c1s1_001051_00.jpg", "0003_c4s1_000010_00.jpg"]
MARKET_GALLERY = [
    "-1_c1s1_000401_03.jpg",
    "-1_c5s1_000402_01.jpg",
    "0000_c2s1_000151_01.jpg",
    "0001_c2s1_000200_01.jpg",
    "0003_c5s1_000300_02.jpg",
]


@pytest.fixture
def market_root(tmp_path: Path, write_images: WriteImages) -> Path:
    base = tmp_path / "Market-1501-v15.09.15"
    write_images(base / "bounding_box_train", MARKET_TRAIN)
    write_images(base / "query", MARKET_QUERY)
    write_images(base / "bounding_box_test", MARKET_GALLERY)
    return tmp_path


@pytest.fixture
def partial_reid_root(tmp_path: Path, write_images: WriteImages) -> Path:
    base = tmp_path / "Partial-REID_Dataset"
    write_images(base / "whole_body_images", ["001_01.jpg", "001_02.jpg", "002_01.jpg", "003_01.jpg"])
    write_images(base / "partial_body_images", ["001_01.jpg", "002_01.jpg", "002_02.jpg"])
    write_images(base / "occluded_body_images", ["003_01.jpg", "003_02.jpg"])
    return tmp_path


def _by_name(records: list[ImageRecord]) -> dict[str, ImageRecord]:
    return {Path(r.path).name: r for r in records}


# ---- Market-1501 ------------------------------------------------------------------------------------


def test_market_counts_and_junk_dropped(market_root: Path) -> None:
    data = Market1501(market_root)
    assert (len(data.train), len(data.query), len(data.gallery)) == (4, 2, 3)
    assert data.junk == {"train": 0, "query": 0, "gallery": 2}
    assert data.num_junk == 2
    assert all(r.pid != -1 for r in data.gallery)
    assert data.dataset_path == market_root / "Market-1501-v15.09.15"


def test_market_keeps_distractor_pid_zero_in_gallery(market_root: Path) -> None:
    gallery = _by_name(Market1501(market_root).gallery)
    assert gallery["0000_c2s1_000151_01.jpg"].pid == 0
    assert sorted({r.pid for r in gallery.values()}) == [0, 1, 3]


def test_market_camids_are_zero_based(market_root: Path) -> None:
    data = Market1501(market_root)
    assert _by_name(data.train)["0010_c6s1_000001_00.jpg"].camid == 5
    assert _by_name(data.query)["0001_c1s1_001051_00.jpg"].camid == 0
    assert _by_name(data.gallery)["0003_c5s1_000300_02.jpg"].camid == 4
    assert data.num_train_cams == 4


def test_market_train_pids_relabelled_contiguously_in_original_order(market_root: Path) -> None:
    data = Market1501(market_root)
    train = _by_name(data.train)
    # original ids 2, 7, 10 -> 0, 1, 2 (sorted by the original id)
    assert train["0002_c1s1_000451_03.jpg"].pid == 0
    assert train["0007_c2s1_000100_01.jpg"].pid == 1
    assert train["0007_c3s2_0001_02.jpg"].pid == 1
    assert train["0010_c6s1_000001_00.jpg"].pid == 2
    assert data.num_train_pids == 3
    # query and gallery keep the original ids, so they still match each other
    assert {r.pid for r in data.query} == {1, 3}


def test_records_are_absolute_and_sorted_by_path(market_root: Path) -> None:
    data = Market1501(market_root)
    for records in (data.train, data.query, data.gallery):
        paths = [r.path for r in records]
        assert paths == sorted(paths)
        assert all(isinstance(p, str) and Path(p).is_absolute() and Path(p).is_file() for p in paths)
    assert all(isinstance(r, ImageRecord) for r in data.train)


def test_loading_is_deterministic(tmp_path: Path, write_images: WriteImages) -> None:
    folder = tmp_path / "Partial_iLIDS"
    # written in a scrambled order: the listing order of the file system must not leak into the records
    write_images(folder / "Probe", ["077.jpg", "003.jpg", "050.jpg", "001.jpg"])
    write_images(folder / "Gallery", ["050.jpg", "001.jpg", "077.jpg", "003.jpg"])
    first, second = PartialILIDSP(tmp_path), PartialILIDSP(tmp_path)
    assert first.query == second.query and first.gallery == second.gallery
    assert [r.pid for r in first.query] == [1, 3, 50, 77]


@pytest.mark.parametrize(
    "bad_name",
    [
        "0001_c7s1_000001_00.jpg",  # Market has cameras 1..6
        "0001_c0s1_000001_00.jpg",
        "1502_c1s1_000001_00.jpg",  # person id above 1501
        "-5_c1s1_000001_00.jpg",
        "1-2_c1s1_000001_00.jpg",
        "img_0001.jpg",
    ],
)
def test_market_bad_file_name_raises_naming_the_file(market_root: Path, bad_name: str) -> None:
    bad = market_root / "Market-1501-v15.09.15" / "query" / bad_name
    bad.write_bytes(JPEG)
    with pytest.raises(FileNameError) as info:
        Market1501(market_root)
    message = str(info.value)
    assert str(bad) in message
    assert "_c(" in message  # the expected pattern is shown


def test_market_camera_seven_error_mentions_range(market_root: Path) -> None:
    (market_root / "Market-1501-v15.09.15" / "bounding_box_test" / "0001_c7s1_000001_00.jpg").write_bytes(JPEG)
    with pytest.raises(FileNameError, match=r"camera 7 is out of range \(1\.\.6\)"):
        Market1501(market_root)


# ---- DukeMTMC-reID ----------------------------------------------------------------------------------


def test_duke_accepts_camera_eight_and_large_ids(tmp_path: Path, write_images: WriteImages) -> None:
    base = tmp_path / "DukeMTMC-reID"
    write_images(base / "bounding_box_train", ["0001_c2_f0046182.jpg", "0003_c8_f0000010.jpg"])
    write_images(base / "query", ["5388_c8_f0100000.jpg"])
    write_images(base / "bounding_box_test", ["5388_c1_f0000001.jpg", "7140_c7_f0000002.jpg"])
    data = DukeMTMCreID(tmp_path)
    assert [(r.pid, r.camid) for r in data.train] == [(0, 1), (1, 7)]
    assert [(r.pid, r.camid) for r in data.query] == [(5388, 7)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(5388, 0), (7140, 6)]
    assert data.num_train_cams == 2


def test_duke_rejects_camera_nine(tmp_path: Path, write_images: WriteImages) -> None:
    base = tmp_path / "DukeMTMC-reID"
    write_images(base / "bounding_box_train", ["0001_c2_f0046182.jpg"])
    write_images(base / "query", ["0005_c9_f0046985.jpg"])
    write_images(base / "bounding_box_test", ["0005_c1_f0046985.jpg"])
    with pytest.raises(FileNameError, match=r"0005_c9_f0046985\.jpg"):
        DukeMTMCreID(tmp_path)


# ---- partial benchmarks -----------------------------------------------------------------------------


def test_partial_reid_queries_with_occluded_images(partial_reid_root: Path) -> None:
    data = PartialREID(partial_reid_root)
    assert data.train == [] and data.num_train_pids == 0
    assert [Path(r.path).parent.name for r in data.query] == ["occluded_body_images"] * 2
    assert [(r.pid, r.camid) for r in data.query] == [(3, 0), (3, 0)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(1, 1), (1, 1), (2, 1), (3, 1)]


def test_partial_reid_cropped_queries_with_partial_images(partial_reid_root: Path) -> None:
    data = PartialREIDCropped(partial_reid_root)
    assert data.train == []
    assert [Path(r.path).parent.name for r in data.query] == ["partial_body_images"] * 3
    assert [(r.pid, r.camid) for r in data.query] == [(1, 0), (2, 0), (2, 0)]
    assert data.gallery == PartialREID(partial_reid_root).gallery


def test_partial_reid_bad_name(partial_reid_root: Path) -> None:
    bad = partial_reid_root / "Partial-REID_Dataset" / "whole_body_images" / "person1.jpg"
    bad.write_bytes(JPEG)
    with pytest.raises(FileNameError) as info:
        PartialREID(partial_reid_root)
    assert str(bad) in str(info.value)


def test_partial_ilids_p_pid_from_leading_digits(tmp_path: Path, write_images: WriteImages) -> None:
    base = tmp_path / "Partial_iLIDS"
    write_images(base / "Probe", ["001.jpg", "119.jpg"])
    write_images(base / "Gallery", ["001.jpg", "119.jpg", "12a.jpg"])
    data = PartialILIDSP(tmp_path)
    assert [(r.pid, r.camid) for r in data.query] == [(1, 0), (119, 0)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(1, 1), (119, 1), (12, 1)]  # sorted by path
    assert data.train == []


def test_partial_ilids_o_pid_from_four_digits_with_suffix(tmp_path: Path, write_images: WriteImages) -> None:
    base = tmp_path / "PartialILIDS"
    write_images(base / "Probe", ["0001_c0.jpg", "0023.jpg"])
    write_images(base / "Gallery", ["0001.jpg", "00235.jpg"])
    data = PartialILIDSO(tmp_path)
    assert [(r.pid, r.camid) for r in data.query] == [(1, 0), (23, 0)]
    # only the first four digits are the id
    assert [(r.pid, r.camid) for r in data.gallery] == [(1, 1), (23, 1)]


def test_partial_ilids_o_rejects_three_digit_names(tmp_path: Path, write_images: WriteImages) -> None:
    base = tmp_path / "PartialILIDS"
    write_images(base / "Probe", ["001.jpg"])
    write_images(base / "Gallery", ["0001.jpg"])
    with pytest.raises(FileNameError, match=r"001\.jpg"):
        PartialILIDSO(tmp_path)


# ---- layout errors ----------------------------------------------------------------------------------


def test_missing_split_folder_names_path_and_prints_tree(tmp_path: Path, write_images: WriteImages) -> None:
    base = tmp_path / "Market-1501-v15.09.15"
    write_images(base / "bounding_box_train", MARKET_TRAIN)
    write_images(base / "bounding_box_test", MARKET_GALLERY)
    with pytest.raises(MissingLayoutError) as info:
        Market1501(tmp_path)
    message = str(info.value)
    assert str(base / "query") in message
    assert Market1501.expected_tree(tmp_path) in message
    assert "bounding_box_train/" in message and "0002_c1s1_000451_03.jpg" in message


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingLayoutError) as info:
        PartialILIDSO(tmp_path)
    assert str(tmp_path / "PartialILIDS") in str(info.value)
    assert "Probe/" in str(info.value) and "Gallery/" in str(info.value)


def test_expected_tree_lists_every_folder_with_an_example() -> None:
    tree = DukeMTMCreID.expected_tree()
    lines = tree.splitlines()
    assert lines[0] == "<root>/"
    assert lines[1] == "`-- DukeMTMC-reID/"
    for folder in ("bounding_box_train/", "query/", "bounding_box_test/"):
        assert any(line.strip().endswith(folder) for line in lines)
    assert sum(line.strip().endswith(".jpg") for line in lines) == 3
    assert tree.isascii()


def test_split_without_images_is_an_error(tmp_path: Path, write_images: WriteImages) -> None:
    base = tmp_path / "Partial_iLIDS"
    write_images(base / "Probe", ["001.jpg"])
    (base / "Gallery").mkdir()
    (base / "Gallery" / "Thumbs.db").write_bytes(b"\0\1")
    with pytest.raises(EmptySplitError) as info:
        PartialILIDSP(tmp_path)
    assert isinstance(info.value, MissingLayoutError)
    assert str(base / "Gallery") in str(info.value)


def test_non_image_files_are_ignored(market_root: Path) -> None:
    query = market_root / "Market-1501-v15.09.15" / "query"
    (query / "Thumbs.db").write_bytes(b"not an image")
    (query / "readme.txt").write_text("hello")
    (query / "sub").mkdir()
    (query / "sub" / "0005_c1s1_000001_00.jpg").write_bytes(JPEG)
    (query / "0004_c2s1_000001_00.JPG").write_bytes(JPEG)
    buffer = io.BytesIO()
    Image.new("L", (8, 16)).save(buffer, format="PNG")
    (query / "0006_c3s1_000001_00.png").write_bytes(buffer.getvalue())
    data = Market1501(market_root, verify_images=True)
    assert {r.pid for r in data.query} == {1, 3, 4, 6}
    assert len(data.query) == 4


# ---- image verification -----------------------------------------------------------------------------


def test_corrupt_image_detected_only_when_verifying(market_root: Path) -> None:
    bad = market_root / "Market-1501-v15.09.15" / "bounding_box_test" / "0001_c3s1_000001_00.jpg"
    bad.write_bytes(b"this is not a jpeg at all")
    assert len(Market1501(market_root).gallery) == 4  # listing does not decode
    with pytest.raises(CorruptImageError) as info:
        Market1501(market_root, verify_images=True)
    assert str(bad) in str(info.value)
    assert "reason:" in str(info.value)


def test_truncated_jpeg_is_corrupt(tmp_path: Path, write_images: WriteImages) -> None:
    base = tmp_path / "PartialILIDS"
    write_images(base / "Probe", ["0001.jpg"])
    write_images(base / "Gallery", ["0001.jpg"])
    truncated = base / "Gallery" / "0002.jpg"
    truncated.write_bytes(JPEG[: len(JPEG) // 2])
    with pytest.raises(CorruptImageError, match=r"0002\.jpg"):
        PartialILIDSO(tmp_path, verify_images=True)


def test_verify_images_accepts_valid_layout(partial_reid_root: Path) -> None:
    data = PartialREID(partial_reid_root, verify_images=True)
    assert len(data.query) == 2


def test_read_image_returns_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (8, 16), 128).save(path)
    image = read_image(path)
    assert image.mode == "RGB"
    assert image.size == (8, 16)


def test_read_image_missing_file_is_corrupt_image_error(tmp_path: Path) -> None:
    with pytest.raises(CorruptImageError, match=r"nope\.jpg"):
        read_image(tmp_path / "nope.jpg")


# ---- roots, registry, statistics --------------------------------------------------------------------


def test_empty_root_lists_expected_folders(tmp_path: Path) -> None:
    with pytest.raises(EmptyRootError) as info:
        available_benchmarks(tmp_path)
    message = str(info.value)
    assert "none of the known dataset folders" in message
    for cls in BENCHMARKS.values():
        assert cls.dataset_dir in message
        assert cls.name in message


def test_nonexistent_root(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "root"
    with pytest.raises(EmptyRootError, match="does not exist"):
        available_benchmarks(missing)
    with pytest.raises(EmptyRootError) as info:
        Market1501(missing)
    assert str(missing) in str(info.value)


def test_available_benchmarks_in_registry_order(partial_reid_root: Path, write_images: WriteImages) -> None:
    write_images(partial_reid_root / "PartialILIDS" / "Probe", ["0001.jpg"])
    (partial_reid_root / "DukeMTMC-reID.zip").write_bytes(b"")  # a file, not a dataset folder
    assert available_benchmarks(partial_reid_root) == [
        "partial_reid",
        "partial_reid_cropped",
        "partial_ilids_o",
    ]


def test_registry_order_and_classes() -> None:
    assert list(BENCHMARKS) == [
        "market1501",
        "dukemtmc",
        "partial_reid",
        "partial_reid_cropped",
        "partial_ilids_p",
        "partial_ilids_o",
    ]
    assert BENCHMARKS["partial_reid_cropped"] is PartialREIDCropped
    assert BENCHMARKS["partial_reid"] is PartialREID
    assert all(cls.name == name for name, cls in BENCHMARKS.items())


def test_build_benchmark(partial_reid_root: Path) -> None:
    data = build_benchmark("partial_reid_cropped", partial_reid_root)
    assert isinstance(data, PartialREIDCropped)
    with pytest.raises(BenchmarkError) as info:
        build_benchmark("market", partial_reid_root)
    assert not isinstance(info.value, KeyError)
    assert "market1501" in str(info.value) and "partial_ilids_o" in str(info.value)


def test_errors_are_value_errors() -> None:
    for error in (MissingLayoutError, EmptySplitError, FileNameError, CorruptImageError, EmptyRootError):
        assert issubclass(error, BenchmarkError)
    assert issubclass(BenchmarkError, ValueError)


def test_statistics_rows(market_root: Path, partial_reid_root: Path) -> None:
    rows = Market1501(market_root).statistics()
    assert rows == [
        {"benchmark": "market1501", "split": "train", "identities": 3, "images": 4, "cameras": 4, "junk": 0},
        {"benchmark": "market1501", "split": "query", "identities": 2, "images": 2, "cameras": 2, "junk": 0},
        {"benchmark": "market1501", "split": "gallery", "identities": 3, "images": 3, "cameras": 2, "junk": 2},
    ]
    partial = PartialREID(partial_reid_root).statistics()
    assert [row["split"] for row in partial] == ["query", "gallery"]
    assert partial[1] == {
        "benchmark": "partial_reid",
        "split": "gallery",
        "identities": 3,
        "images": 4,
        "cameras": 1,
        "junk": 0,
    }


def test_format_statistics_is_an_aligned_table() -> None:
    rows = [
        {"benchmark": "market1501", "split": "gallery", "identities": 751, "images": 15913, "cameras": 6, "junk": 3819},
        {"benchmark": "partial_ilids_o", "split": "gallery", "identities": 119, "images": 119, "cameras": 1, "junk": 0},
    ]
    lines = format_statistics(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["benchmark", "split", "identities", "images", "cameras", "junk"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["market1501", "gallery", "751", "15913", "6", "3819"]
    assert lines[3].split() == ["partial_ilids_o", "gallery", "119", "119", "1", "0"]
    # numbers are right-aligned under their header, text columns start at the same offset
    for header in ("identities", "images", "cameras", "junk"):
        end = lines[0].index(header) + len(header)
        assert lines[2][end - 1] != " " and lines[3][end - 1] != " "
    assert lines[2].index("gallery") == lines[3].index("gallery") == lines[0].index("split")
