"""Storage of part masks: three files per image folder, memory-mapped, looked up by image path in O(1).

Layout under the mask folder (``masks.out_dir``, a DVC output), one sub-folder per image folder of the data root::

    masks/
    `-- Market-1501-v15.09.15/
        |-- query/
        |   |-- index.json                 file names in row order, mask size, part order, source, per-image status
        |   |-- masks.<hash>.npy           (N, 5, H, ceil(W / 8)) uint8: the binary masks bit-packed along the width
        |   `-- keypoints.<hash>.npy       (N, 17, 3) float32: the person's keypoints (x, y, confidence), zeros if none
        `-- ...

Why this shape:

* **Few large files.** Thousands of small files make DVC (and S3) slow; a benchmark split is two arrays and an index.
* **O(1) lookup.** ``index.json`` maps a file name to its row; the arrays are opened with ``mmap_mode="r"``, so
  reading one image's masks touches a few hundred bytes and never loads the whole split. Training workers can share
  one :class:`MaskStore` (the operating system shares the mapped pages).
* **Bit-packed.** Masks are binary; 5 parts x 96 x 32 pixels take 1,920 bytes per image (Market-1501's 32,217
  images: 62 MB), and unpacking a row costs microseconds.
* **Atomic and deterministic.** The arrays are written under temporary names and renamed; their names carry a hash
  of their content, and ``index.json`` (written last, also by rename) names them. A reader therefore sees either
  the old split or the new one, never a mixture, and the same masks give byte-identical files (``dvc repro`` twice
  does nothing the second time).

Images are keyed by their path relative to the data root, in posix form, e.g.
``Market-1501-v15.09.15/query/0001_c1s1_001051_00.jpg``: the same key the training data set has for each image.
Partial-REID's two protocols share ``whole_body_images``; it is stored once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from sanet.contracts.parts import NUM_PARTS, PARTS
from sanet.infra.atomic import atomic_write
from sanet.masks.errors import MasksError
from sanet.masks.part_masks import LabelRule

__all__ = ["FORMAT_VERSION", "INDEX_FILE", "STATUSES", "FolderMasks", "MaskStore", "write_folder"]

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
#: Per-image outcome of the keypoint source: a person was used; nobody was found; the source does not list the image.
STATUSES = ("person", "no_person", "not_listed")


def write_folder(
    out_dir: str | Path,
    folder: str,
    files: Sequence[str],
    masks: np.ndarray,
    keypoints: np.ndarray,
    status: Sequence[str],
    info: dict[str, Any] | None = None,
) -> Path:
    """Store the masks of one image folder (``folder`` relative to the data root); returns the store sub-folder.

    Args:
        out_dir: the mask folder (``masks.out_dir``).
        folder: the image folder relative to the data root, e.g. ``Market-1501-v15.09.15/query``.
        files: image file names inside that folder, one per row.
        masks: (N, 5, H, W) uint8 binary masks in the order of :data:`sanet.contracts.parts.PARTS`.
        keypoints: (N, 17, 3) float keypoints of the person used (zeros where none).
        status: one of :data:`STATUSES` per image.
        info: extra entries for ``index.json`` (e.g. the keypoint source and thresholds).
    """
    n = len(files)
    if masks.ndim != 4 or masks.shape[:2] != (n, NUM_PARTS):
        raise ValueError(f"masks must be (N={n}, {NUM_PARTS}, H, W), got {masks.shape}")
    if keypoints.shape != (n, 17, 3) or len(status) != n:
        raise ValueError("keypoints must be (N, 17, 3) and status must have N entries")
    if unknown := set(status) - set(STATUSES):
        raise ValueError(f"unknown status {sorted(unknown)}; allowed: {STATUSES}")
    target = Path(out_dir) / folder
    target.mkdir(parents=True, exist_ok=True)
    packed = np.packbits(masks.astype(bool), axis=-1)
    kps = np.ascontiguousarray(keypoints, dtype=np.float32)
    digest = hashlib.sha256(packed.tobytes() + kps.tobytes()).hexdigest()[:16]
    names = {"masks": f"masks.{digest}.npy", "keypoints": f"keypoints.{digest}.npy"}
    atomic_write(target / names["masks"], lambda f: np.save(f, packed))
    atomic_write(target / names["keypoints"], lambda f: np.save(f, kps))
    index = {
        "format": FORMAT_VERSION,
        "folder": folder,
        "parts": list(PARTS),
        "height": int(masks.shape[2]),
        "width": int(masks.shape[3]),
        "count": n,
        "arrays": names,
        **(info or {}),
        "no_person": [i for i, s in enumerate(status) if s == "no_person"],
        "not_listed": [i for i, s in enumerate(status) if s == "not_listed"],
        "files": list(files),
    }
    text = json.dumps(index, indent=1) + "\n"
    atomic_write(target / INDEX_FILE, lambda f: f.write(text.encode()))
    for stale in [*target.glob("masks.*.npy"), *target.glob("keypoints.*.npy")]:
        if stale.name not in names.values():
            stale.unlink(missing_ok=True)
    return target


class FolderMasks:
    """The stored masks of one image folder, memory-mapped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.index = json.loads((path / INDEX_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MasksError(f"cannot read the mask index\n  {path / INDEX_FILE}\nreason: {exc}") from None
        if self.index.get("format") != FORMAT_VERSION or self.index.get("parts") != list(PARTS):
            raise MasksError(
                f"{path / INDEX_FILE} was written by another version of the mask stage (format "
                f"{self.index.get('format')}, parts {self.index.get('parts')}); rerun `sanet masks`"
            )
        self.files: list[str] = self.index["files"]
        self.height: int = self.index["height"]
        self.width: int = self.index["width"]
        self.rows = {name: row for row, name in enumerate(self.files)}
        try:
            self.packed = np.load(path / self.index["arrays"]["masks"], mmap_mode="r")
            self.keypoints = np.load(path / self.index["arrays"]["keypoints"], mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise MasksError(
                f"the mask store in {path} is incomplete or damaged ({exc}); rerun `sanet masks`"
            ) from None
        expected = (len(self.files), NUM_PARTS, self.height, (self.width + 7) // 8)
        if self.packed.shape != expected or len(self.keypoints) != len(self.files):
            raise MasksError(f"the mask store in {path} does not match its index; rerun `sanet masks`")

    def __len__(self) -> int:
        return len(self.files)

    @functools.cached_property
    def rule(self) -> LabelRule:
        """How the mask stage labelled this folder (keypoint confidence, minimum area, mask size)."""
        try:
            return LabelRule(
                float(self.index["min_confidence"]), float(self.index["min_area"]), (self.height, self.width)
            )
        except (KeyError, TypeError, ValueError):
            raise MasksError(
                f"{self.path / INDEX_FILE} does not record the mask stage's min_confidence and min_area; "
                "rerun `sanet masks`"
            ) from None

    def masks(self, row: int) -> np.ndarray:
        """(5, H, W) uint8 {0, 1} masks of one row."""
        return np.unpackbits(self.packed[row], axis=-1, count=self.width)

    @functools.cached_property
    def visible(self) -> np.ndarray:
        """(N, 5) bool: which parts each image shows (a non-empty mask); computed once, on first use."""
        return cast(np.ndarray, np.asarray(self.packed).reshape(len(self.files), NUM_PARTS, -1).any(axis=-1))

    @functools.cached_property
    def no_person_rows(self) -> frozenset[int]:
        """Rows whose image had nobody the source found (their masks are empty)."""
        return frozenset(self.index.get("no_person", []))

    @functools.cached_property
    def not_listed_rows(self) -> frozenset[int]:
        """Rows whose image the keypoint source does not list (coco_json; their masks are empty)."""
        return frozenset(self.index.get("not_listed", []))


class MaskStore:
    """Read access to a mask folder: ``store.masks("Market-1501-v15.09.15/query/0001_c1s1_001051_00.jpg")``.

    Paths may be relative to the data root or, when ``data_root`` is given, absolute paths under it (as the
    benchmark loaders give them). Folders are opened on first use and kept open.
    """

    def __init__(self, out_dir: str | Path, data_root: str | Path | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.data_root = Path(data_root).expanduser().absolute() if data_root is not None else None
        self._folders: dict[str, FolderMasks] = {}

    def key(self, image_path: str | Path) -> str:
        """The store key (path relative to the data root, posix) of an image path."""
        path = Path(image_path)
        if path.is_absolute():
            if self.data_root is None:
                raise MasksError(f"an absolute image path needs the data root to be known: {path}")
            try:
                path = path.relative_to(self.data_root)
            except ValueError:
                raise MasksError(f"the image is not under the data root {self.data_root}:\n  {image_path}") from None
        return path.as_posix()

    def folder(self, folder: str) -> FolderMasks:
        """The stored masks of one image folder (relative to the data root)."""
        if folder not in self._folders:
            path = self.out_dir / folder
            if not (path / INDEX_FILE).is_file():
                raise MasksError(f"no masks stored for the image folder {folder}: {path / INDEX_FILE} is missing")
            self._folders[folder] = FolderMasks(path)
        return self._folders[folder]

    def folders(self) -> Iterator[str]:
        """Image folders (relative to the data root) that have stored masks, sorted."""
        for index in sorted(self.out_dir.glob(f"*/*/{INDEX_FILE}")):
            yield index.parent.relative_to(self.out_dir).as_posix()

    def _locate(self, image_path: str | Path) -> tuple[FolderMasks, int]:
        key = self.key(image_path)
        folder, _, name = key.rpartition("/")
        stored = self.folder(folder)
        row = stored.rows.get(name)
        if row is None:
            raise MasksError(f"no masks stored for the image {key} (rerun `sanet masks` after changing the data)")
        return stored, row

    def masks(self, image_path: str | Path) -> np.ndarray:
        """(5, H, W) uint8 {0, 1} masks of one image, in the order of :data:`sanet.contracts.parts.PARTS`."""
        stored, row = self._locate(image_path)
        return stored.masks(row)

    def keypoints(self, image_path: str | Path) -> np.ndarray:
        """(17, 3) keypoints (x, y, confidence) of the person the masks were drawn from (zeros if none)."""
        stored, row = self._locate(image_path)
        return np.array(stored.keypoints[row])

    def label_rule(self, image_path: str | Path) -> LabelRule:
        """How the mask stage labelled the image's folder: relabels views of the image as the stage would."""
        stored, _ = self._locate(image_path)
        return stored.rule

    def visible(self, image_path: str | Path) -> np.ndarray:
        """(5,) bool: which parts the image shows."""
        return cast(np.ndarray, self.masks(image_path).reshape(NUM_PARTS, -1).any(axis=-1))

    def __contains__(self, image_path: object) -> bool:
        try:
            self._locate(image_path)  # type: ignore[arg-type]
        except MasksError:
            return False
        return True
