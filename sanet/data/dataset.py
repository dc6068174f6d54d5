"""Torch datasets over benchmark records: training images with their part-mask labels, and test images.

:class:`TrainDataset` pairs each training image with its stored part masks and keypoints (:mod:`sanet.masks.mask_files`)
and augments them together (:class:`sanet.data.transforms.TrainTransform`; the keypoints relabel partial views).
Its items are addressed by ``(index, sample_seed)`` pairs, as :class:`sanet.data.sampler.IdentityBatchSampler`
yields them, so the augmentation of every item is fixed by the sampler's seed: the same batches come out whatever
the number of DataLoader workers, and a resumed run sees the images it would have seen. :class:`ImageDataset` serves
test images for feature extraction.

Items are dicts of tensors, which the default collate function stacks into batch dicts (``batch["images"]`` ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from sanet.data.benchmarks import BENCHMARKS, ImageRecord
from sanet.data.partial import RowSpan, crop_rows
from sanet.data.transforms import PersonKeypoints, TestTransform, TrainTransform, decode_image
from sanet.masks.errors import MasksError
from sanet.masks.mask_files import MaskStore

__all__ = ["ImageDataset", "TrainDataset", "item_seed"]

#: How many missing images a MasksError lists before "...".
_LIST_MISSING = 5


def item_seed(seed: int, index: int) -> int:
    """A 63-bit generator seed for item ``index`` of a dataset seeded with ``seed`` (used when no sampler seed)."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1


def _label(pid: int, camid: int, index: int) -> dict[str, Tensor]:
    return {
        "pids": torch.tensor(pid, dtype=torch.int64),
        "camids": torch.tensor(camid, dtype=torch.int64),
        "indices": torch.tensor(index, dtype=torch.int64),
    }


def _masks_hint(folder: str) -> str:
    """How to create the masks of an image folder (relative to the data root), naming its benchmark if known."""
    dataset_dir = folder.split("/", 1)[0]
    name = next((name for name, cls in BENCHMARKS.items() if cls.dataset_dir == dataset_dir), "<benchmark>")
    return f"run `sanet masks --benchmark {name}` (or `dvc repro masks`) to compute them"


class TrainDataset(Dataset[dict[str, Tensor]]):
    """Training images with their part-mask labels, augmented together.

    Args:
        records: the training split (absolute paths, person ids relabelled to 0..N-1).
        masks: the mask store, opened with the data root so that absolute paths resolve.
        transform: the joint image and mask augmentation.
        seed: seeds the augmentation of items requested by a bare index (not through the sampler).

    ``dataset[(index, sample_seed)]`` augments with a generator seeded by ``sample_seed``; ``dataset[index]`` with a
    seed derived from ``(seed, index)``. Items: ``images`` float32 (3, H, W), ``mask_labels`` float32 (5, h, w),
    ``pids``, ``camids``, ``indices`` int64 scalars.

    Construction checks that the store holds masks for every record (index lookups only, nothing is decoded), so a
    missing or stale mask stage stops training before the first step with the command that fixes it.
    """

    def __init__(
        self, records: Sequence[ImageRecord], masks: MaskStore, transform: TrainTransform, seed: int = 0
    ) -> None:
        if not records:
            raise ValueError("the training split is empty")
        self.records = list(records)
        self.masks = masks
        self.transform = transform
        self.seed = seed
        self.pids: list[int] = [r.pid for r in self.records]
        self._check_masks()

    def _check_masks(self) -> None:
        by_folder: dict[str, list[str]] = {}
        for record in self.records:
            try:
                key = self.masks.key(record.path)
            except MasksError as exc:
                raise MasksError(f"{exc}\n(the mask store must be opened with the data root of the records)") from None
            folder, _, name = key.rpartition("/")
            by_folder.setdefault(folder, []).append(name)
        for folder, names in by_folder.items():
            try:
                rows = self.masks.folder(folder).rows
            except MasksError as exc:
                raise MasksError(f"{exc}\nthe part masks of {folder} are missing: {_masks_hint(folder)}") from None
            missing = [name for name in names if name not in rows]
            if missing:
                listed = "\n".join(f"  {folder}/{name}" for name in missing[:_LIST_MISSING])
                more = f"\n  ... ({len(missing) - _LIST_MISSING} more)" if len(missing) > _LIST_MISSING else ""
                raise MasksError(
                    f"the mask store {self.masks.out_dir} has no masks for {len(missing)} of the {len(names)} "
                    f"training images in {folder}, e.g.\n{listed}{more}\n"
                    f"the images changed after the mask stage ran: {_masks_hint(folder)}"
                )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Tensor]:
        if isinstance(item, tuple):
            index, sample_seed = item
        else:
            index, sample_seed = item, item_seed(self.seed, int(item))
        record = self.records[index]
        image = decode_image(record.path)
        masks = torch.from_numpy(self.masks.masks(record.path))
        person = PersonKeypoints(self.masks.keypoints(record.path), self.masks.label_rule(record.path))
        generator = torch.Generator().manual_seed(int(sample_seed))
        images, labels = self.transform(image, masks, generator, person)
        return {"images": images, "mask_labels": labels, **_label(record.pid, record.camid, index)}

    def __getstate__(self) -> dict[str, Any]:
        # Workers started by pickling (spawn) reopen the memory-mapped mask files instead of receiving copies of them.
        state = self.__dict__.copy()
        state["masks"] = MaskStore(self.masks.out_dir, self.masks.data_root)
        return state


class ImageDataset(Dataset[dict[str, Tensor]]):
    """Test images for feature extraction: ``images`` float32 (3, H, W), ``pids``, ``camids``, ``indices``.

    ``spans``, when given, holds per record None or a :class:`sanet.data.partial.RowSpan`: the rows of the decoded
    image that the transform sees (an in-memory partial view, stretched to the input size like any test image).
    """

    def __init__(
        self, records: Sequence[ImageRecord], transform: TestTransform, spans: Sequence[RowSpan | None] | None = None
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.spans = list(spans) if spans is not None else None
        if self.spans is not None and len(self.spans) != len(self.records):
            raise ValueError(f"{len(self.spans)} row spans for {len(self.records)} records")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        record = self.records[index]
        image = decode_image(record.path)
        span = self.spans[index] if self.spans is not None else None
        if span is not None:
            if span.top < 0 or span.height < 1 or span.bottom > image.shape[-2]:
                raise ValueError(f"rows {span.top}..{span.bottom} outside the {image.shape[-2]} rows of {record.path}")
            image, _ = crop_rows(image, span)
        return {"images": self.transform(image), **_label(record.pid, record.camid, index)}
