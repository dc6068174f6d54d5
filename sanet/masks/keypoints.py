"""Keypoint sources for the mask stage, and the rule that picks one person per image.

Three sources (`masks.source` in params.yaml), all giving COCO-17 keypoints as (17, 3) arrays of x, y, confidence in
the image's own pixels:

* ``synthetic``: the ground truth `sanet synth` writes into every benchmark folder (``keypoints_coco17.json``, image
  paths relative to that folder). Visibility flag 2 (visible) becomes confidence 1; flags 1 (labelled but hidden,
  e.g. behind an occluder) and 0 (outside the image) become 0, so a hidden part counts as not visible.
* ``coco_json``: a COCO keypoints file the user provides (``masks.coco_json``) with ``images`` and ``annotations``
  (several per image allowed); ``file_name`` is the image path relative to ``data.root``, e.g.
  ``Market-1501-v15.09.15/query/0001_c1s1_001051_00.jpg``. The third value of each keypoint is read as a COCO
  visibility flag when every value in the file is 0, 1 or 2 (ground truth), and as a confidence otherwise (detector
  output). Images the file does not list are counted and get empty masks.
* ``openpifpaf``: OpenPifPaf run on the images (see :mod:`sanet.masks.pifpaf`).

With several people in an image, :func:`nearest_person` keeps the one whose confident keypoints are, on average,
nearest the image centre: a re-ID box is centred on its subject, and bystanders are cut at its edges.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sanet.contracts.keypoints import COCO_KEYPOINTS, KEYPOINTS_FILE
from sanet.masks.errors import MasksError

__all__ = [
    "CocoJsonSource",
    "ImageItem",
    "KeypointSource",
    "People",
    "SyntheticSource",
    "flags_to_confidence",
    "nearest_person",
    "read_coco_keypoints",
]

NUM_KEYPOINTS = len(COCO_KEYPOINTS)

People = list[np.ndarray]
"""The people found in one image, each (17, 3) float32: x, y, confidence."""


@dataclass(frozen=True)
class ImageItem:
    """One benchmark image: its path relative to the data root (posix, the store's key) and its absolute path."""

    relpath: str
    path: Path


class KeypointSource(ABC):
    """Gives the people in a batch of images. `None` for an image means the source has no entry for it at all."""

    name: str
    #: images per call to :meth:`people` (the stage batches by this).
    batch_size: int = 64
    #: where the source computes ("cpu" for file-based sources).
    device: str = "cpu"

    @abstractmethod
    def people(self, items: Sequence[ImageItem], images: Sequence[Image.Image]) -> list[People | None]:
        """The people in each image (an empty list: nobody found), or None where the source lacks the image."""


def flags_to_confidence(keypoints: np.ndarray) -> np.ndarray:
    """COCO visibility flags -> confidences: 2 (visible) -> 1, 1 (hidden) and 0 (not labelled) -> 0."""
    out = np.asarray(keypoints, dtype=np.float32).copy()
    out[:, 2] = (out[:, 2] == 2).astype(np.float32)
    return out


def read_coco_keypoints(path: Path, prefix: str = "") -> dict[str, People]:
    """Read a COCO keypoints file into {prefix + file_name: people}; errors name the file and what is wrong.

    The third keypoint value is a visibility flag if every value in the file is 0, 1 or 2, else a confidence.
    """
    try:
        coco = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MasksError(f"keypoint file not found:\n  {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MasksError(f"cannot read the keypoint file\n  {path}\nreason: {exc}") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise MasksError(f"{path}: not a COCO keypoints file (expected an object with 'images' and 'annotations')")
    try:
        names = {int(img["id"]): str(img["file_name"]).removeprefix("./") for img in coco["images"]}
        raw: list[tuple[int, np.ndarray]] = []
        for ann in coco.get("annotations", []):
            kps = np.asarray(ann["keypoints"], dtype=np.float32)
            if kps.shape != (NUM_KEYPOINTS * 3,):
                raise ValueError(f"annotation {ann.get('id')} has {kps.size} keypoint values, expected 51 (COCO-17)")
            raw.append((int(ann["image_id"]), kps.reshape(NUM_KEYPOINTS, 3)))
    except (KeyError, TypeError, ValueError) as exc:
        raise MasksError(f"{path}: malformed COCO keypoints file ({exc})") from None
    flags = all(np.isin(kps[:, 2], (0.0, 1.0, 2.0)).all() for _, kps in raw)
    people: dict[str, People] = {prefix + name: [] for name in names.values()}
    for image_id, kps in raw:
        if image_id not in names:
            raise MasksError(f"{path}: an annotation refers to image id {image_id}, which 'images' does not list")
        people[prefix + names[image_id]].append(flags_to_confidence(kps) if flags else kps)
    return people


def nearest_person(people: People, image_size: tuple[int, int], min_confidence: float) -> np.ndarray | None:
    """The person whose confident keypoints' mean lies nearest the image centre; None if nobody has one.

    Ties go to the person with more confident keypoints. `image_size` is (width, height).
    """
    centre = np.array(image_size, dtype=np.float64) / 2
    best: tuple[float, int] | None = None
    chosen = None
    for person in people:
        confident = person[:, 2] >= min_confidence
        if not confident.any():
            continue
        key = (float(np.linalg.norm(person[confident, :2].mean(axis=0) - centre)), -int(confident.sum()))
        if best is None or key < best:
            best, chosen = key, person
    return chosen


class CocoJsonSource(KeypointSource):
    """Keypoints from one user-provided COCO file whose file names are relative to the data root."""

    name = "coco_json"

    def __init__(self, path: str | Path) -> None:
        if not str(path):
            raise MasksError("masks.source is coco_json but masks.coco_json names no file")
        self.path = Path(path)
        self.index = read_coco_keypoints(self.path)

    def people(self, items: Sequence[ImageItem], images: Sequence[Image.Image]) -> list[People | None]:
        return [self.index.get(item.relpath) for item in items]


class SyntheticSource(KeypointSource):
    """The synthetic benchmark's ground truth: ``<root>/<dataset folder>/keypoints_coco17.json``.

    Every image must be listed: a missing one means the data folder no longer matches what `sanet synth` wrote.
    """

    name = "synthetic"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._files: dict[str, dict[str, People]] = {}

    def _index(self, dataset_dir: str) -> dict[str, People]:
        if dataset_dir not in self._files:
            path = self.root / dataset_dir / KEYPOINTS_FILE
            if not path.is_file():
                raise MasksError(
                    f"masks.source is synthetic, but the ground-truth keypoint file is missing:\n  {path}\n"
                    "`sanet synth --out DIR` writes it into every benchmark folder; for real data set "
                    "masks.source to openpifpaf (or coco_json with your own keypoint file)"
                )
            self._files[dataset_dir] = read_coco_keypoints(path, prefix=f"{dataset_dir}/")
        return self._files[dataset_dir]

    def people(self, items: Sequence[ImageItem], images: Sequence[Image.Image]) -> list[People | None]:
        out: list[People | None] = []
        for item in items:
            index = self._index(item.relpath.split("/", 1)[0])
            if item.relpath not in index:
                raise MasksError(
                    f"the image is not in its benchmark's ground-truth keypoint file:\n  {item.path}\n"
                    "the data folder no longer matches what `sanet synth` wrote; regenerate it"
                )
            out.append(index[item.relpath])
        return out
