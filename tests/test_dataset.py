"""Training and test datasets: items, their own masks, worker-independent batches, clear errors for missing inputs."""

from __future__ import annotations

import pickle
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from sanet.config import AugmentParams, ColorJitterParams, PartialViewParams, RandomErasingParams
from sanet.data.benchmarks import CorruptImageError, ImageRecord
from sanet.data.dataset import ImageDataset, TrainDataset
from sanet.data.sampler import IdentityBatchSampler
from sanet.data.transforms import TestTransform, TrainTransform, decode_image, resize_masks
from sanet.masks.errors import MasksError
from sanet.masks.mask_files import MaskStore, write_folder

FOLDER = "Market-1501-v15.09.15/bounding_box_train"
SIZE = (64, 32)
MASK_SIZE = (16, 8)
IDS, PER_ID = 6, 3

EVERYTHING = AugmentParams(
    flip=0.5,
    pad=4,
    color_jitter=ColorJitterParams(p=0.5, hue=0.05),
    random_erasing=RandomErasingParams(p=0.5),
    partial=PartialViewParams(crop=0.5, occlude=0.3),
)
NOTHING = AugmentParams(
    flip=0.0,
    pad=0,
    color_jitter=ColorJitterParams(p=0.0),
    random_erasing=RandomErasingParams(p=0.0),
    partial=PartialViewParams(crop=0.0, occlude=0.0),
)


class Split:
    """A tiny Market-style training folder with stored masks."""

    def __init__(self, tmp_path: Path, store_files: slice | None = slice(None)) -> None:
        self.root = tmp_path / "data"
        self.out = tmp_path / "masks"
        folder = self.root / FOLDER
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        self.records: list[ImageRecord] = []
        names = []
        for pid in range(IDS):
            for shot in range(PER_ID):
                name = f"{pid + 1:04d}_c{shot + 1}s1_{shot:06d}_00.jpg"
                pixels = rng.integers(0, 256, (24, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / name, quality=95)
                self.records.append(ImageRecord(str(folder / name), pid, shot))
                names.append(name)
        self.masks = rng.integers(0, 2, (len(names), 5, *MASK_SIZE), dtype=np.uint8)
        if store_files is not None:
            keep = names[store_files]
            rows = [names.index(n) for n in keep]
            kps, status = np.zeros((len(keep), 17, 3)), ["person"] * len(keep)
            write_folder(self.out, FOLDER, keep, self.masks[rows], kps, status, {"min_confidence": 0.3, "min_area": 0})

    def store(self) -> MaskStore:
        return MaskStore(self.out, self.root)

    def dataset(self, augment: AugmentParams = EVERYTHING) -> TrainDataset:
        return TrainDataset(self.records, self.store(), TrainTransform(SIZE, augment), seed=3)


def batches(loader: DataLoader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_items_are_tensors_of_the_documented_shapes(tmp_path: Path) -> None:
    dataset = Split(tmp_path).dataset()
    assert len(dataset) == IDS * PER_ID and dataset.pids == [r.pid for r in dataset.records]
    item = dataset[(7, 12345)]
    assert item["images"].shape == (3, *SIZE) and item["images"].dtype == torch.float32
    assert item["mask_labels"].shape == (5, SIZE[0] // 4, SIZE[1] // 4) and item["mask_labels"].dtype == torch.float32
    for key, value in (("pids", 7 // PER_ID), ("camids", 7 % PER_ID), ("indices", 7)):
        assert item[key].dtype == torch.int64 and item[key].shape == () and item[key].item() == value
    again = dataset[(7, 12345)]
    assert all(torch.equal(item[k], again[k]) for k in item)
    assert not torch.equal(dataset[(7, 54321)]["images"], item["images"])
    assert torch.equal(dataset[7]["images"], dataset[7]["images"])  # a bare index has a fixed seed too


def test_each_image_gets_its_own_masks(tmp_path: Path) -> None:
    split = Split(tmp_path, store_files=slice(None, None, -1))  # stored in another order than the records
    dataset = split.dataset(NOTHING)
    for index in range(len(dataset)):
        expected = F.avg_pool2d(resize_masks(torch.from_numpy(split.masks[index]), SIZE).float(), 4)
        assert torch.equal(dataset[index]["mask_labels"], expected)


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    dataset = Split(tmp_path).dataset()
    runs = []
    for workers in (0, 2):
        sampler = IdentityBatchSampler(dataset.pids, batch_size=8, instances_per_id=2, seed=11)
        sampler.set_epoch(1)
        runs.append(batches(DataLoader(dataset, batch_sampler=sampler, num_workers=workers)))
    assert len(runs[0]) == len(runs[1]) > 0
    for a, b in zip(*runs, strict=True):
        assert a.keys() == b.keys() == {"images", "mask_labels", "pids", "camids", "indices"}
        assert a["images"].shape == (8, 3, *SIZE) and a["pids"].shape == (8,)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_masks_say_how_to_make_them(tmp_path: Path) -> None:
    split = Split(tmp_path, store_files=None)
    with pytest.raises(MasksError, match=r"sanet masks --benchmark market1501.*dvc repro masks"):
        split.dataset()


def test_stale_masks_name_the_images_without_masks(tmp_path: Path) -> None:
    split = Split(tmp_path, store_files=slice(2, None))
    with pytest.raises(MasksError, match="no masks for 2 of the 18") as info:
        split.dataset()
    assert Path(split.records[0].path).name in str(info.value) and "sanet masks" in str(info.value)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_image_stops_the_loader_with_its_path(tmp_path: Path, workers: int) -> None:
    split = Split(tmp_path)
    bad = Path(split.records[4].path)
    bad.write_bytes(bad.read_bytes()[:200])
    dataset = split.dataset()
    with pytest.raises(CorruptImageError, match=bad.name) as info:
        batches(DataLoader(dataset, batch_size=len(dataset), num_workers=workers))
    # Free the loader now: left to a later garbage collection, torch waits 5 s for its worker to stop.
    traceback.clear_frames(info.tb)


def test_the_dataset_pickles_for_spawned_workers(tmp_path: Path) -> None:
    dataset = Split(tmp_path).dataset()
    copy = pickle.loads(pickle.dumps(dataset))
    assert not copy.masks._folders  # the memory-mapped files are reopened, not copied
    assert all(torch.equal(copy[(5, 9)][k], dataset[(5, 9)][k]) for k in ("images", "mask_labels"))


def test_image_dataset_serves_resized_test_images(tmp_path: Path) -> None:
    split = Split(tmp_path, store_files=None)  # no masks needed at test time
    dataset = ImageDataset(split.records, TestTransform(SIZE))
    batch = next(iter(DataLoader(dataset, batch_size=5)))
    assert batch["images"].shape == (5, 3, *SIZE)
    assert torch.equal(batch["images"][2], TestTransform(SIZE)(decode_image(split.records[2].path)))
    assert batch["pids"].tolist() == [r.pid for r in split.records[:5]]
    assert batch["camids"].tolist() == [r.camid for r in split.records[:5]]
    assert batch["indices"].tolist() == list(range(5))
