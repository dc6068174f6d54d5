"""The six benchmark layouts of the synthetic benchmark, written with their ground-truth keypoints and marker.

`write_synthetic` builds the whole benchmark in a temporary sibling folder and moves it into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image
from tqdm import tqdm

from sanet.config import SynthDukeParams, SynthMarketParams, SynthParams
from sanet.contracts.datasets import (
    DATASET_DIRS,
    DUKE_DIR,
    ILIDS_O_DIR,
    ILIDS_P_DIR,
    MARKER_FILE,
    MARKET_DIR,
    PARTIAL_REID_DIR,
)
from sanet.contracts.keypoints import COCO_KEYPOINTS, COCO_SKELETON, KEYPOINTS_FILE
from sanet.data.synthetic.people import (
    BENCH_CODES,
    Camera,
    Identity,
    Rendered,
    add_occluder,
    crop_partial,
    render_person,
    rng_for,
)
from sanet.infra.errors import OverwriteError

GENERATOR_VERSION = 1


@dataclass
class _Split:
    """Images of one benchmark folder, written with their keypoints into one COCO file."""

    root: Path
    quality: int
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)

    def write(self, relpath: str, sample: Rendered) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        sample.image.save(path, format="JPEG", quality=self.quality, subsampling=0, optimize=False)
        image_id = len(self.images) + 1
        w, h = sample.image.size
        self.images.append({"id": image_id, "file_name": relpath, "width": w, "height": h})
        kps = sample.keypoints
        labelled = kps[:, 2] > 0
        if labelled.any():
            x0, y0 = kps[labelled, 0].min(), kps[labelled, 1].min()
            bbox = [
                round(float(x0), 2),
                round(float(y0), 2),
                round(float(kps[labelled, 0].max() - x0), 2),
                round(float(kps[labelled, 1].max() - y0), 2),
            ]
        else:
            bbox = [0.0, 0.0, 0.0, 0.0]
        flat: list[float | int] = []
        for x, y, v in kps:
            flat += [round(float(x), 2), round(float(y), 2), int(v)]
        self.annotations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "category_id": 1,
                "iscrowd": 0,
                "keypoints": flat,
                "num_keypoints": int(labelled.sum()),
                "bbox": bbox,
                "area": round(bbox[2] * bbox[3], 2),
            }
        )

    def close(self, seed: int) -> None:
        coco = {
            "info": {
                "description": "sanet-bench synthetic benchmark ground-truth keypoints",
                "generator_version": GENERATOR_VERSION,
                "seed": seed,
            },
            "categories": [
                {
                    "id": 1,
                    "name": "person",
                    "supercategory": "person",
                    "keypoints": list(COCO_KEYPOINTS),
                    "skeleton": [list(e) for e in COCO_SKELETON],
                }
            ],
            "images": self.images,
            "annotations": self.annotations,
        }
        (self.root / KEYPOINTS_FILE).write_text(json.dumps(coco, separators=(",", ":")) + "\n")


class SyntheticBenchmark:
    """Generates the six benchmark layouts for one parameter set (`params.synth`)."""

    def __init__(self, params: SynthParams):
        self.p = params
        self.seed = params.seed
        self.h, self.w = params.image_height, params.image_width
        self._cameras: dict[tuple[int, int], Camera] = {}
        self.counts: dict[str, int] = {}

    def camera(self, bench: str, index: int) -> Camera:
        key = (BENCH_CODES[bench], index)
        if key not in self._cameras:
            self._cameras[key] = Camera.sample(self.seed, *key)
        return self._cameras[key]

    def identity(self, bench: str, pid: int) -> Identity:
        return Identity.sample(self.seed, BENCH_CODES[bench], pid)

    def image_rng(self, bench: str, pid: int, k: int) -> np.random.Generator:
        return rng_for(self.seed, BENCH_CODES[bench], pid + 10_000, k + 1)

    def render(self, bench: str, pid: int, cam: int, k: int, size: tuple[int, int] | None = None) -> Rendered:
        """Image number `k` of identity `pid` in camera `cam` (deterministic)."""
        rng = self.image_rng(bench, pid, k)
        w, h = size or (self.w, self.h)
        return render_person(self.identity(bench, pid), self.camera(bench, cam), w, h, rng)

    # -- Market-1501 and DukeMTMC-reID ------------------------------------------------------------------------

    def pids(self, bench: str, count: int, high: int) -> list[int]:
        rng = rng_for(self.seed, BENCH_CODES[bench], 999_999)
        return [int(p) for p in rng.choice(np.arange(1, high + 1), size=count, replace=False)]

    def _holistic(self, out: Path, bench: str, dirname: str, n_cams: int, name, sizes: bool) -> Iterator[int]:
        """Shared Market/Duke layout: train identities, then test identities split into query and gallery."""
        p = self.p.market if bench == "market" else self.p.duke
        extra = 0 if bench == "market" else cast(SynthDukeParams, p).gallery_only_ids
        pids = self.pids(bench, p.train_ids + p.test_ids + extra, 1501 if bench == "market" else 7140)
        train, test, only = (
            pids[: p.train_ids],
            pids[p.train_ids : p.train_ids + p.test_ids],
            pids[-extra:] if extra else [],
        )
        split = _Split(out / dirname, self.p.jpeg_quality)
        frame = 0

        def emit(folder: str, pid: int, cam: int, k: int, label: int | None = None) -> None:
            nonlocal frame
            frame += 1
            rng = self.image_rng(bench, pid, 5000 + k)
            size = (self.w, int(self.h * rng.uniform(0.85, 1.25))) if sizes else None
            sample = self.render(bench, pid, cam, k, size)
            split.write(f"{folder}/{name(pid if label is None else label, cam, frame, k)}", sample)

        cams: np.ndarray | list[int]  # an array for the train identities, a list for the test ones
        for pid in train:
            rng = rng_for(self.seed, BENCH_CODES[bench], pid, 7)
            cams = rng.choice(np.arange(1, n_cams + 1), size=int(rng.integers(2, min(5, n_cams) + 1)), replace=False)
            k = 0
            for cam in sorted(int(c) for c in cams):
                for _ in range(int(rng.integers(1, 4))):
                    emit("bounding_box_train", pid, cam, k)
                    k += 1
            yield 1
        for pid in test:
            rng = rng_for(self.seed, BENCH_CODES[bench], pid, 7)
            # Four cameras in random order: the first two also hold this identity's queries.
            cams = [int(c) for c in rng.choice(np.arange(1, n_cams + 1), size=4, replace=False)]
            k = 0
            for cam in cams[:2]:
                emit("query", pid, cam, k)
                k += 1
            for cam in cams:
                for _ in range(1 if cam in cams[:2] else int(rng.integers(1, 3))):
                    emit("bounding_box_test", pid, cam, k)
                    k += 1
            yield 1
        for pid in only:
            rng = rng_for(self.seed, BENCH_CODES[bench], pid, 7)
            cam = int(rng.integers(1, n_cams + 1))
            for k in range(2):
                emit("bounding_box_test", pid, cam, k)
            yield 1
        if bench == "market":
            # pid 0: distractors (bad detections that stay in the gallery); pid -1: junk (dropped by the protocol).
            market_sizes = cast(SynthMarketParams, p)
            for label, count in ((0, market_sizes.distractors), (-1, market_sizes.junk)):
                for i in range(count):
                    rng = rng_for(self.seed, BENCH_CODES[bench], 200_000 + label, i)
                    cam = int(rng.integers(1, n_cams + 1))
                    other = pids[int(rng.integers(len(pids)))]
                    person = None if label == -1 and rng.random() < 0.5 else self.identity(bench, other)
                    full = render_person(person, self.camera(bench, cam), self.w, self.h, rng)
                    if label == 0:
                        # A misaligned box: only part of a person, shifted.
                        shift = int(rng.uniform(0.25, 0.5) * self.h) * (1 if rng.random() < 0.5 else -1)
                        img = Image.new("RGB", full.image.size, self.camera(bench, cam).ground)
                        img.paste(full.image, (0, shift))
                        kps = full.keypoints.copy()
                        kps[:, 1] += shift
                        kps[(kps[:, 1] < 0) | (kps[:, 1] >= self.h) | (kps[:, 2] == 0)] = 0
                        full = Rendered(img, kps)
                    frame += 1
                    split.write(f"bounding_box_test/{name(label, cam, frame, i)}", full)
                yield 1
        split.close(self.seed)
        self.counts[dirname] = len(split.images)

    def market(self, out: Path) -> Iterator[int]:
        def name(pid: int, cam: int, frame: int, k: int) -> str:
            pid_text = "-1" if pid == -1 else f"{pid:04d}"
            return f"{pid_text}_c{cam}s{(frame % 6) + 1}_{frame * 25:06d}_{(k % 9) + 1:02d}.jpg"

        return self._holistic(out, "market", MARKET_DIR, 6, name, sizes=False)

    def duke(self, out: Path) -> Iterator[int]:
        def name(pid: int, cam: int, frame: int, k: int) -> str:
            return f"{pid:04d}_c{cam}_f{frame * 37:07d}.jpg"

        return self._holistic(out, "duke", DUKE_DIR, 8, name, sizes=True)

    # -- Partial-REID -----------------------------------------------------------------------------------------

    def partial_reid(self, out: Path) -> Iterator[int]:
        """Whole, partial (vertical crops) and occluded images; both Partial-REID protocols read these files."""
        p = self.p.partial
        split = _Split(out / PARTIAL_REID_DIR, self.p.jpeg_quality)
        for pid in range(1, p.partial_reid_ids + 1):
            for k in range(p.partial_reid_images):
                num = f"{pid:03d}_{k + 1:02d}.jpg"
                split.write(f"whole_body_images/{num}", self.render("partial_reid", pid, 1 + k % 2, k))
                rng = self.image_rng("partial_reid", pid, 100 + k)
                split.write(
                    f"partial_body_images/{num}", crop_partial(self.render("partial_reid", pid, 3, 100 + k), rng)
                )
                occluded, _ = add_occluder(self.render("partial_reid", pid, 4, 200 + k), rng)
                split.write(f"occluded_body_images/{num}", occluded)
            yield 1
        split.close(self.seed)
        self.counts[PARTIAL_REID_DIR] = len(split.images)

    # -- Partial-iLIDS, both releases -------------------------------------------------------------------------

    def partial_ilids(self, out: Path) -> Iterator[int]:
        """The FPR release (-O) keeps the occluder in the probe; the DSR release (-P) crops it away."""
        p = self.p.partial
        dsr = _Split(out / ILIDS_P_DIR, self.p.jpeg_quality)
        fpr = _Split(out / ILIDS_O_DIR, self.p.jpeg_quality)
        for pid in range(1, p.partial_ilids_ids + 1):
            gallery = self.render("partial_ilids", pid, 1, 0)
            rng = self.image_rng("partial_ilids", pid, 50)
            occluded, top = add_occluder(self.render("partial_ilids", pid, 2, 1), rng)
            cropped = occluded.crop((0, 0, self.w, max(8, top)))
            dsr.write(f"Probe/{pid:03d}.jpg", cropped)
            dsr.write(f"Gallery/{pid:03d}.jpg", gallery)
            fpr.write(f"Probe/{pid:04d}.jpg", occluded)
            fpr.write(f"Gallery/{pid:04d}.jpg", gallery)
            yield 1
        for split, dirname in ((dsr, ILIDS_P_DIR), (fpr, ILIDS_O_DIR)):
            split.close(self.seed)
            self.counts[dirname] = len(split.images)

    def total_steps(self) -> int:
        m, d, pp = self.p.market, self.p.duke, self.p.partial
        return (
            m.train_ids
            + m.test_ids
            + 2
            + d.train_ids
            + d.test_ids
            + d.gallery_only_ids
            + pp.partial_reid_ids
            + pp.partial_ilids_ids
        )

    def generate(self, out: Path, progress: bool = True) -> dict[str, int]:
        """Write every layout under `out` (which must be empty or absent); returns image counts per folder."""
        steps = (self.market(out), self.duke(out), self.partial_reid(out), self.partial_ilids(out))
        with tqdm(total=self.total_steps(), desc="synthesising identities", unit="id", disable=not progress) as bar:
            for gen in steps:
                for n in gen:
                    bar.update(n)
        marker = {
            "generator": "sanet.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "params": self.p.model_dump(),
            "images": dict(sorted(self.counts.items())),
        }
        (out / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        return dict(self.counts)


def write_synthetic(out: str | Path, params: SynthParams, progress: bool = True) -> dict[str, int]:
    """Generate the synthetic benchmark into `out`, replacing an earlier synthetic benchmark there atomically.

    The benchmark is built in a temporary sibling folder and moved into place only when complete, so an interrupted
    run leaves the previous data untouched. Files in `out` that do not belong to a benchmark layout are kept; a
    benchmark folder in `out` that the generator did not write (real data) stops the run instead of being replaced.
    """
    out = Path(out)
    existing = [d for d in DATASET_DIRS if (out / d).exists()]
    if existing and not (out / MARKER_FILE).is_file():
        raise OverwriteError(
            f"{out} already holds {', '.join(existing)} and no {MARKER_FILE} marker: it looks like real data. "
            "Choose another --out folder (or move the real data away first)."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    try:
        counts = SyntheticBenchmark(params).generate(tmp, progress=progress)
        out.mkdir(exist_ok=True)
        for name in (*DATASET_DIRS, MARKER_FILE):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts
