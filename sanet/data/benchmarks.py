"""Loaders for the real person re-identification benchmarks, read from their published folder layouts.

Six benchmarks are supported, each by one class registered in :data:`BENCHMARKS` under a short name:

* ``market1501``: :class:`Market1501`, folder ``Market-1501-v15.09.15/``
* ``dukemtmc``: :class:`DukeMTMCreID`, folder ``DukeMTMC-reID/``
* ``partial_reid``: :class:`PartialREID`, folder ``Partial-REID_Dataset/`` (occluded queries)
* ``partial_reid_cropped``: :class:`PartialREIDCropped`, same folder (cropped partial-body queries)
* ``partial_ilids_p``: :class:`PartialILIDSP`, folder ``Partial_iLIDS/`` (the DSR release)
* ``partial_ilids_o``: :class:`PartialILIDSO`, folder ``PartialILIDS/`` (the FPR release)

A data root may hold any subset of these folders; :func:`available_benchmarks` says which are present.

Loading rules, shared by every benchmark:

* Only files whose extension is ``.jpg``, ``.jpeg`` or ``.png`` (any case) are images. Every other file is
  ignored, e.g. the ``Thumbs.db`` that the real Market-1501 archive ships inside its image folders.
  Sub-folders of a split folder are not searched.
* Every image file must have a name the benchmark's pattern parses, with values in range; otherwise
  :class:`FileNameError` is raised naming the file. An image is never skipped silently. The one exception is
  the standard Market-1501 / DukeMTMC-reID protocol: images with person id ``-1`` ("junk") are dropped, and
  counted in :attr:`ReIDBenchmark.junk`.
* A missing dataset or split folder raises :class:`MissingLayoutError`, whose message prints the expected
  folder tree; a split folder without any image raises :class:`EmptySplitError` (a kind of
  :class:`MissingLayoutError`).
* Records are sorted by path, so two loads of the same folder give identical lists.
* Images are only listed, not decoded, unless ``verify_images=True`` is passed: then every image is fully
  decoded once with :func:`read_image` and the first unreadable one raises :class:`CorruptImageError`.

All errors derive from :class:`BenchmarkError` (a :class:`ValueError`), and their messages are written to be
read on a terminal without a traceback.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

from PIL import Image
from tqdm import tqdm

from sanet.contracts.datasets import DUKE_DIR, ILIDS_O_DIR, ILIDS_P_DIR, MARKET_DIR, PARTIAL_REID_DIR
from sanet.infra.errors import SanetError

__all__ = [
    "BENCHMARKS",
    "IMAGE_EXTENSIONS",
    "BenchmarkError",
    "CorruptImageError",
    "DukeMTMCreID",
    "EmptyRootError",
    "EmptySplitError",
    "FileNameError",
    "ImageRecord",
    "Market1501",
    "MissingLayoutError",
    "PartialILIDSO",
    "PartialILIDSP",
    "PartialREID",
    "PartialREIDCropped",
    "ReIDBenchmark",
    "SplitLayout",
    "available_benchmarks",
    "build_benchmark",
    "format_statistics",
    "read_image",
]

#: File extensions (lower case) that are treated as images; everything else in a split folder is ignored.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})

#: Person id that the Market-1501 / DukeMTMC-reID protocol marks as junk (dropped on load).
JUNK_PID = -1

#: Camera ids given to the two sides of the evaluation-only partial benchmarks (a single "camera" each).
QUERY_CAMID = 0
GALLERY_CAMID = 1

SPLITS: tuple[str, ...] = ("train", "query", "gallery")


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------


class BenchmarkError(SanetError, ValueError):
    """Base class of every error raised while locating or reading a benchmark."""


class MissingLayoutError(BenchmarkError):
    """A dataset or split folder is missing; the message names it and prints the expected tree."""


class EmptySplitError(MissingLayoutError):
    """A split folder exists but holds no image file."""


class FileNameError(BenchmarkError):
    """An image file name does not match the benchmark's pattern, or a parsed value is out of range."""


class CorruptImageError(BenchmarkError):
    """An image file cannot be read or fully decoded."""


class EmptyRootError(BenchmarkError):
    """The data root does not exist, or holds none of the known dataset folders."""


# --------------------------------------------------------------------------------------------------------
# Records and shared helpers
# --------------------------------------------------------------------------------------------------------


class ImageRecord(NamedTuple):
    """One image of a split: absolute path, person id and 0-based camera id."""

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class SplitLayout:
    """Where one split lives inside a benchmark folder, with an example file name for error messages."""

    split: str
    folder: str
    example: str


@dataclass(frozen=True)
class _Field:
    """One integer captured by a file-name pattern and its inclusive valid range (``hi=None``: unbounded)."""

    what: str
    lo: int
    hi: int | None = None

    def describe(self) -> str:
        return f"{self.lo}..{self.hi}" if self.hi is not None else f">= {self.lo}"


def _parse_name(path: Path, pattern: re.Pattern[str], fields: Sequence[_Field], example: str) -> list[int]:
    """Match ``pattern`` at the start of the file name and return its groups as range-checked integers.

    This is the single place where file names are interpreted, so every benchmark reports a bad name the same
    way: a :class:`FileNameError` naming the full path, the pattern and an example of a valid name.
    """
    expected = f"expected a name matching the regex {pattern.pattern} (e.g. {example})"
    match = pattern.match(path.name)
    if match is None:
        raise FileNameError(f"cannot parse the image file name\n  {path}\n{expected}")
    values: list[int] = []
    for field, text in zip(fields, match.groups(), strict=True):
        try:
            value = int(text)
        except ValueError:
            raise FileNameError(
                f"the {field.what} {text!r} is not an integer in the image file name\n  {path}\n{expected}"
            ) from None
        if value < field.lo or (field.hi is not None and value > field.hi):
            raise FileNameError(
                f"the {field.what} {value} is out of range ({field.describe()}) in the image file name\n"
                f"  {path}\n{expected}"
            )
        values.append(value)
    return values


def _list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _split_stats(records: Sequence[ImageRecord]) -> tuple[int, int, int]:
    """(identities, images, cameras) of a list of records."""
    return len({r.pid for r in records}), len(records), len({r.camid for r in records})


def _check_root(root: Path) -> None:
    if not root.exists():
        raise EmptyRootError(f"the dataset root does not exist:\n  {root}")
    if not root.is_dir():
        raise EmptyRootError(f"the dataset root is not a folder:\n  {root}")


def read_image(path: str | Path) -> Image.Image:
    """Fully decode an image file and return it in RGB.

    Decoding the whole file (not just its header) also catches truncated downloads. Any failure is re-raised
    as :class:`CorruptImageError` naming the path and the decoder's reason, so a bad file in a 30,000-image
    benchmark can be found and replaced.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        raise CorruptImageError(f"cannot read the image\n  {path}\nreason: {reason}") from exc


# --------------------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------------------


class ReIDBenchmark(ABC):
    """A person re-ID benchmark read from its published folder layout under a data root.

    Subclasses declare where the splits live (:attr:`layout`) and how a file name gives a person id and a
    camera id (:meth:`_label`); this class checks the folders, lists and parses the images, relabels the
    training ids and optionally verifies that every image decodes.

    Attributes:
        root: the data root (absolute).
        dataset_path: ``root / dataset_dir``.
        train, query, gallery: lists of :class:`ImageRecord` sorted by path. ``train`` person ids are
            relabelled to ``0..N-1`` (sorted by original id) so that they can index a classifier; query and
            gallery keep the original ids so that they match each other. ``train`` is empty for
            evaluation-only sets.
        junk: per split, how many images the protocol dropped (person id ``-1``).
    """

    name: ClassVar[str]
    dataset_dir: ClassVar[str]
    layout: ClassVar[tuple[SplitLayout, ...]]

    def __init__(self, root: str | Path, verify_images: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.dataset_path = self.root / self.dataset_dir
        self.junk: dict[str, int] = dict.fromkeys(SPLITS, 0)
        _check_root(self.root)
        self._check_layout()

        splits: dict[str, list[ImageRecord]] = {split: [] for split in SPLITS}
        for entry in self.layout:
            splits[entry.split] = self._load_split(entry)
        self.train = self._relabel(splits["train"])
        self.query = splits["query"]
        self.gallery = splits["gallery"]
        if verify_images:
            self.verify_images()

    # ---- subclass hooks ------------------------------------------------------------------------------

    @abstractmethod
    def _label(self, path: Path, split: str) -> tuple[int, int] | None:
        """Return ``(pid, camid)`` for an image file, or ``None`` if the protocol drops it as junk."""

    # ---- layout --------------------------------------------------------------------------------------

    @classmethod
    def expected_tree(cls, root: str | Path | None = None) -> str:
        """The folder tree this benchmark expects, as indented ASCII, with an example file in each folder."""
        top = "<root>" if root is None else str(root).rstrip("/")
        lines = [f"{top}/", f"`-- {cls.dataset_dir}/"]
        for i, entry in enumerate(cls.layout):
            last = i == len(cls.layout) - 1
            lines.append(f"    {'`--' if last else '|--'} {entry.folder}/")
            indent = "    " + (" " if last else "|") + "   "
            lines += [f"{indent}|-- {entry.example}", f"{indent}`-- ..."]
        return "\n".join(lines)

    def _layout_message(self, problem: str, paths: Iterable[Path]) -> str:
        listed = "\n".join(f"  {p}" for p in paths)
        return (
            f"{self.name}: {problem}\n{listed}\n"
            f"expected layout (one example file per folder):\n{self.expected_tree(self.root)}"
        )

    def _check_layout(self) -> None:
        if not self.dataset_path.is_dir():
            raise MissingLayoutError(self._layout_message("dataset folder not found:", [self.dataset_path]))
        missing = [self.dataset_path / e.folder for e in self.layout if not (self.dataset_path / e.folder).is_dir()]
        if missing:
            noun = "folder" if len(missing) == 1 else "folders"
            raise MissingLayoutError(self._layout_message(f"split {noun} not found:", missing))

    # ---- loading -------------------------------------------------------------------------------------

    def _load_split(self, entry: SplitLayout) -> list[ImageRecord]:
        folder = self.dataset_path / entry.folder
        files = _list_images(folder)
        if not files:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise EmptySplitError(self._layout_message(f"the {entry.split} folder holds no image ({exts}):", [folder]))
        records: list[ImageRecord] = []
        for path in files:
            label = self._label(path, entry.split)
            if label is None:
                self.junk[entry.split] += 1
            else:
                records.append(ImageRecord(str(path), *label))
        return sorted(records)

    @staticmethod
    def _relabel(records: list[ImageRecord]) -> list[ImageRecord]:
        """Map the original person ids to ``0..N-1`` in increasing order of the original id."""
        new_pid = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
        return [r._replace(pid=new_pid[r.pid]) for r in records]

    def verify_images(self) -> None:
        """Fully decode every listed image; raise :class:`CorruptImageError` at the first bad one."""
        records = [*self.train, *self.query, *self.gallery]
        for record in tqdm(records, desc=f"verifying {self.name}", unit="img", disable=None):
            read_image(record.path)

    # ---- statistics ----------------------------------------------------------------------------------

    @property
    def num_junk(self) -> int:
        """Total number of images dropped as junk (person id ``-1``) over all splits."""
        return sum(self.junk.values())

    @property
    def num_train_pids(self) -> int:
        """Number of training identities (the size of a classifier head)."""
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        """Number of distinct cameras in the training split."""
        return len({r.camid for r in self.train})

    def statistics(self) -> list[dict[str, str | int]]:
        """One row per split of this benchmark (evaluation-only sets have no train row).

        Keys: ``benchmark, split, identities, images, cameras, junk``. Identities count distinct person ids, so
        the Market-1501 gallery's distractor id 0 counts as one identity, as in the published numbers; ``junk``
        is the number of images the protocol dropped from that split (person id -1).
        """
        rows: list[dict[str, str | int]] = []
        for entry in self.layout:
            ids, images, cams = _split_stats(getattr(self, entry.split))
            rows.append(
                {
                    "benchmark": self.name,
                    "split": entry.split,
                    "identities": ids,
                    "images": images,
                    "cameras": cams,
                    "junk": self.junk[entry.split],
                }
            )
        return rows

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(getattr(self, s))}" for s in SPLITS)
        return f"{type(self).__name__}(root={str(self.root)!r}, {sizes})"


# --------------------------------------------------------------------------------------------------------
# Market-1501 and DukeMTMC-reID: train / query / gallery, pid and camera in the file name
# --------------------------------------------------------------------------------------------------------


class _MarketStyleBenchmark(ReIDBenchmark):
    """Benchmarks in the Market-1501 format: ``<pid>_c<camera>...`` names, junk id -1 dropped.

    Cameras are numbered from 1 in file names and stored 0-based. Person id 0 (distractors, gallery only)
    is kept as an ordinary identity.
    """

    pattern: ClassVar[re.Pattern[str]] = re.compile(r"^([-\d]+)_c(\d)")
    max_pid: ClassVar[int]
    num_cameras: ClassVar[int]

    def _label(self, path: Path, split: str) -> tuple[int, int] | None:
        fields = (_Field("person id", JUNK_PID, self.max_pid), _Field("camera", 1, self.num_cameras))
        pid, camera = _parse_name(path, self.pattern, fields, self.layout[0].example)
        if pid == JUNK_PID:
            return None
        return pid, camera - 1


class Market1501(_MarketStyleBenchmark):
    """Market-1501 (Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015).

    Published statistics (after dropping the 3,819 junk images, person id -1, of the gallery folder):

    ========  ==========  ======
    split     identities  images
    ========  ==========  ======
    train     751         12,936
    query     750         3,368
    gallery   751         15,913  (750 + distractor id 0)
    ========  ==========  ======

    6 cameras. File names look like ``0002_c1s1_000451_03.jpg``: person id, camera 1-6, then sequence,
    frame and box number.
    """

    name = "market1501"
    dataset_dir = MARKET_DIR
    layout = (
        SplitLayout("train", "bounding_box_train", "0002_c1s1_000451_03.jpg"),
        SplitLayout("query", "query", "0001_c1s1_001051_00.jpg"),
        SplitLayout("gallery", "bounding_box_test", "0001_c1s1_001051_03.jpg"),
    )
    max_pid = 1501
    num_cameras = 6


class DukeMTMCreID(_MarketStyleBenchmark):
    """DukeMTMC-reID (Ristani et al., ECCVW 2016; Zheng et al., ICCV 2017), in the Market-1501 format.

    Published statistics:

    ========  ==========  ======
    split     identities  images
    ========  ==========  ======
    train     702         16,522
    query     702         2,228
    gallery   1,110       17,661
    ========  ==========  ======

    8 cameras. File names look like ``0001_c2_f0046182.jpg``: person id, camera 1-8, frame number. Person ids
    are the original (sparse) four-digit DukeMTMC identity numbers, hence the wider id range than Market.
    """

    name = "dukemtmc"
    dataset_dir = DUKE_DIR
    layout = (
        SplitLayout("train", "bounding_box_train", "0001_c2_f0046182.jpg"),
        SplitLayout("query", "query", "0005_c2_f0046985.jpg"),
        SplitLayout("gallery", "bounding_box_test", "0005_c5_f0051341.jpg"),
    )
    max_pid = 9999
    num_cameras = 8


# --------------------------------------------------------------------------------------------------------
# Partial benchmarks: evaluation only, one folder of queries and one of gallery images
# --------------------------------------------------------------------------------------------------------


class _PartialBenchmark(ReIDBenchmark):
    """Evaluation-only partial re-ID sets: no train split, person id from the file name.

    There is no camera information in these releases; the query side gets camera id 0 and the gallery side
    camera id 1, so that the usual "same id and same camera" filter of the evaluation removes nothing.
    """

    pattern: ClassVar[re.Pattern[str]]

    def _label(self, path: Path, split: str) -> tuple[int, int] | None:
        (pid,) = _parse_name(path, self.pattern, (_Field("person id", 0),), self.layout[0].example)
        return pid, QUERY_CAMID if split == "query" else GALLERY_CAMID


class PartialREID(_PartialBenchmark):
    """Partial-REID (Zheng et al., "Partial Person Re-identification", ICCV 2015), occluded queries.

    Published statistics: 60 identities, each with 5 whole-body, 5 partial (cropped) and 5 occluded images.
    This protocol queries with the occluded images against the whole-body gallery:

    ========  ==========  ======
    split     identities  images
    ========  ==========  ======
    query     60          300     (occluded_body_images)
    gallery   60          300     (whole_body_images)
    ========  ==========  ======

    File names look like ``001_01.jpg``: the person id is the digits before the first ``_``.
    """

    name = "partial_reid"
    dataset_dir = PARTIAL_REID_DIR
    pattern = re.compile(r"^(\d+)_")
    layout = (
        SplitLayout("query", "occluded_body_images", "001_01.jpg"),
        SplitLayout("gallery", "whole_body_images", "001_01.jpg"),
    )


class PartialREIDCropped(PartialREID):
    """Partial-REID with the cropped partial-body images as queries (same files as :class:`PartialREID`).

    ========  ==========  ======
    split     identities  images
    ========  ==========  ======
    query     60          300     (partial_body_images)
    gallery   60          300     (whole_body_images)
    ========  ==========  ======
    """

    name = "partial_reid_cropped"
    layout = (
        SplitLayout("query", "partial_body_images", "001_01.jpg"),
        SplitLayout("gallery", "whole_body_images", "001_01.jpg"),
    )


class PartialILIDSP(_PartialBenchmark):
    """Partial-iLIDS, the release distributed with DSR (He et al., CVPR 2018).

    Published statistics: 119 identities, one manually cropped partial probe and one whole-body gallery image
    each:

    ========  ==========  ======
    split     identities  images
    ========  ==========  ======
    query     119         119     (Probe)
    gallery   119         119     (Gallery)
    ========  ==========  ======

    File names look like ``001.jpg``: the person id is the leading digits of the file stem.
    """

    name = "partial_ilids_p"
    dataset_dir = ILIDS_P_DIR
    pattern = re.compile(r"^(\d+)")
    layout = (
        SplitLayout("query", "Probe", "001.jpg"),
        SplitLayout("gallery", "Gallery", "001.jpg"),
    )


class PartialILIDSO(_PartialBenchmark):
    """Partial-iLIDS, the release distributed with FPR (He et al., ICCV 2019), with occluded probes.

    Published statistics: 119 identities, one probe and one gallery image each:

    ========  ==========  ======
    split     identities  images
    ========  ==========  ======
    query     119         119     (Probe)
    gallery   119         119     (Gallery)
    ========  ==========  ======

    File names start with a four-digit person id, possibly followed by a suffix: ``0001.jpg``,
    ``0001_c0.jpg``.
    """

    name = "partial_ilids_o"
    dataset_dir = ILIDS_O_DIR
    pattern = re.compile(r"^(\d{4})")
    layout = (
        SplitLayout("query", "Probe", "0001.jpg"),
        SplitLayout("gallery", "Gallery", "0001.jpg"),
    )


# --------------------------------------------------------------------------------------------------------
# Registry and helpers for callers (CLI, pipeline)
# --------------------------------------------------------------------------------------------------------

#: Every supported benchmark by registry name, in a fixed order (full-body sets first, then partial sets).
BENCHMARKS: dict[str, type[ReIDBenchmark]] = {
    cls.name: cls for cls in (Market1501, DukeMTMCreID, PartialREID, PartialREIDCropped, PartialILIDSP, PartialILIDSO)
}


def build_benchmark(name: str, root: str | Path, verify_images: bool = False) -> ReIDBenchmark:
    """Load the benchmark registered as ``name`` from ``root``.

    An unknown name raises :class:`BenchmarkError` listing the known names (not a bare ``KeyError``).
    """
    try:
        cls = BENCHMARKS[name]
    except KeyError:
        raise BenchmarkError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)}") from None
    return cls(root, verify_images=verify_images)


def available_benchmarks(root: str | Path) -> list[str]:
    """Names of the benchmarks whose dataset folder exists under ``root``, in registry order.

    Only the top-level folder is checked here; loading the benchmark checks the rest of its layout. Raises
    :class:`EmptyRootError` if ``root`` does not exist or holds none of the known dataset folders, since a
    wrong root is then far more likely than an intentionally empty one.
    """
    path = Path(root).expanduser().absolute()
    _check_root(path)
    names = [name for name, cls in BENCHMARKS.items() if (path / cls.dataset_dir).is_dir()]
    if not names:
        width = max(map(len, BENCHMARKS))
        folders = "\n".join(f"  {name:<{width}}  {path / cls.dataset_dir}/" for name, cls in BENCHMARKS.items())
        raise EmptyRootError(
            f"the dataset root holds none of the known dataset folders:\n  {path}\n"
            f"expected at least one of these (benchmark, folder):\n{folders}"
        )
    return names


_COLUMNS: tuple[str, ...] = ("benchmark", "split", "identities", "images", "cameras", "junk")


def format_statistics(rows: Sequence[dict[str, str | int]]) -> str:
    """Render :meth:`ReIDBenchmark.statistics` rows as an aligned plain-text table for a terminal.

    Text columns are left-aligned and numeric columns right-aligned; a dashed rule separates the header.
    """
    cells = [list(_COLUMNS)] + [[str(row[c]) for c in _COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    numeric = [all(isinstance(row[c], int) for row in rows) and bool(rows) for c in _COLUMNS]

    def render(line: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(line, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(cells[0]), rule, *(render(line) for line in cells[1:])])
