"""The mask stage: keypoints -> five part masks for every image of the chosen benchmarks, stored, with coverage.

``run_masks`` is what `sanet masks`, the DVC stage ``masks`` and the Kubeflow step call; it records itself as the
pipeline's ``masks`` MLflow run (``track=False`` for tests and notebooks without a tracking store). Per image folder
of the data root it decodes each image (a corrupt one stops the run with its path), asks the keypoint source for the
people in it, keeps the one nearest the centre, draws the five masks (:mod:`sanet.masks.part_masks`) and stores the
folder (:mod:`sanet.masks.mask_files`). Then it computes the coverage of every benchmark split and writes it as the
stage's metric. An image in which the source finds nobody gets five empty masks and is counted (``no_person``); the
stage goes on.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from sanet.config import MasksParams, Params
from sanet.contracts.parts import NUM_PARTS
from sanet.data.benchmarks import ReIDBenchmark, available_benchmarks, build_benchmark, read_image
from sanet.masks.coverage import (
    Coverage,
    compute_coverage,
    coverage_summary,
    write_coverage,
    write_coverage_summary,
)
from sanet.masks.errors import MasksError
from sanet.masks.keypoints import CocoJsonSource, ImageItem, KeypointSource, SyntheticSource, nearest_person
from sanet.masks.mask_files import MaskStore, write_folder
from sanet.masks.part_masks import part_masks

if TYPE_CHECKING:
    from mlflow import ActiveRun

__all__ = [
    "MasksReport",
    "benchmark_splits",
    "build_source",
    "resolve_benchmarks",
    "run_masks",
    "write_masks_preview",
]

ALL = "all"
MASK_HEAD_STRIDE = 16  # the segmentation heads work on stride-16 features (24 x 8 for a 384 x 128 input)


@dataclass
class MasksReport:
    """What a mask stage run did: counts, speed and the coverage it wrote."""

    benchmarks: list[str]
    source: str
    device: str
    images: int = 0
    seconds: float = 0.0
    no_person: int = 0
    not_listed: int = 0
    folders: list[str] = field(default_factory=list)
    coverage: Coverage = field(default_factory=dict)
    coverage_file: Path | None = None
    metrics_file: Path | None = None
    store_bytes: int = 0
    run_id: str | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def resolve_benchmarks(names: str | Iterable[str], root: Path) -> list[str]:
    """``all`` -> every benchmark whose folder exists under `root`; otherwise the names themselves (validated)."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if ALL in names:
        return available_benchmarks(root)
    return names


def benchmark_splits(benchmark: ReIDBenchmark) -> dict[str, list[str]]:
    """{split: [image key]} of a loaded benchmark; keys are paths relative to its data root (posix)."""
    return {
        entry.split: [Path(r.path).relative_to(benchmark.root).as_posix() for r in getattr(benchmark, entry.split)]
        for entry in benchmark.layout
    }


def build_source(masks: MasksParams, root: Path) -> KeypointSource:
    """The keypoint source `masks.source` names (OpenPifPaf is imported only here, and only when chosen)."""
    if masks.source == "synthetic":
        return SyntheticSource(root)
    if masks.source == "coco_json":
        return CocoJsonSource(masks.coco_json)
    from sanet.masks.pifpaf import OpenPifPafSource

    pp = masks.openpifpaf
    return OpenPifPafSource(pp.checkpoint, device=pp.device, batch_size=pp.batch_size, long_edge=pp.long_edge)


def _check_size(params: Params) -> None:
    head = (params.input.height // MASK_HEAD_STRIDE, params.input.width // MASK_HEAD_STRIDE)
    if params.masks.height < head[0] or params.masks.width < head[1]:
        raise MasksError(
            f"masks.height x masks.width ({params.masks.height} x {params.masks.width}) is smaller than the mask "
            f"head ({head[0]} x {head[1]} for a {params.input.height} x {params.input.width} input); "
            "store at least that"
        )


def _folder_masks(
    folder: str, names: list[str], root: Path, source: KeypointSource, masks: MasksParams, bar: tqdm
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Masks, keypoints and status of every image of one folder, in `names` order."""
    out = np.zeros((len(names), NUM_PARTS, masks.height, masks.width), dtype=np.uint8)
    keypoints = np.zeros((len(names), 17, 3), dtype=np.float32)
    status: list[str] = []
    for start in range(0, len(names), source.batch_size):
        batch = names[start : start + source.batch_size]
        items = [ImageItem(f"{folder}/{name}", root / folder / name) for name in batch]
        images = [read_image(item.path) for item in items]  # CorruptImageError names the path
        for offset, (image, people) in enumerate(zip(images, source.people(items, images), strict=True)):
            row = start + offset
            person = None if people is None else nearest_person(people, image.size, masks.min_confidence)
            status.append("not_listed" if people is None else "person" if person is not None else "no_person")
            if person is not None:
                keypoints[row] = person
                out[row] = part_masks(
                    person, image.size, (masks.height, masks.width), masks.min_confidence, masks.min_area
                )
        bar.update(len(batch))
    return out, keypoints, status


def run_masks(
    params: Params,
    benchmarks: str | Iterable[str] = ALL,
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    coverage_file: str | Path | None = None,
    source: KeypointSource | None = None,
    metrics_file: str | Path | None = None,
    progress: bool = True,
    track: bool = True,
) -> MasksReport:
    """Compute and store the part masks of every image of `benchmarks` (a name, a list, or ``all``).

    Args:
        params: validated parameters; ``params.masks`` says the source, thresholds and stored size.
        benchmarks: benchmark names, or ``all`` for every benchmark found under the root.
        root: the data root (default ``params.data.root``).
        out_dir: the mask store folder (default ``params.masks.out_dir``).
        coverage_file: where the coverage JSON goes (default ``params.masks.coverage_file``).
        metrics_file: where its summary, the stage's DVC metric, goes (default ``params.masks.metrics_file``).
        source: a keypoint source to use instead of the one ``params.masks.source`` names (tests, notebooks).
        progress: show a progress bar.
        track: record the run in MLflow (`report.run_id`); the tracking store is checked before any work.

    Raises:
        BenchmarkError: a missing folder (the expected tree is printed) or a corrupt image (its path is named).
        MasksError: a missing keypoint file or checkpoint, OpenPifPaf not installed, a stored size too small.
    """
    masks = params.masks
    root = Path(root if root is not None else params.data.root)
    out_dir = Path(out_dir if out_dir is not None else masks.out_dir)
    _check_size(params)
    if track:
        from sanet.infra.tracking import check_tracking_uri, tracking_uri

        check_tracking_uri(tracking_uri(params))  # an unreachable store fails before the work, not after it
    names = resolve_benchmarks(benchmarks, root)
    loaded = [build_benchmark(name, root) for name in names]  # layout errors before any work
    splits = {b.name: benchmark_splits(b) for b in loaded}
    folders: dict[str, list[str]] = {}
    for by_split in splits.values():
        for keys in by_split.values():
            for key in keys:
                folder, _, name = key.rpartition("/")
                folders.setdefault(folder, [])
                folders[folder].append(name)
    folders = {folder: sorted(set(files)) for folder, files in folders.items()}
    source = source or build_source(masks, root)
    report = MasksReport(benchmarks=names, source=source.name, device=source.device, folders=list(folders))
    total = sum(len(files) for files in folders.values())
    info = {
        "source": source.name,
        "min_confidence": masks.min_confidence,
        "min_area": masks.min_area,
    }
    if source.name == "openpifpaf":
        info["checkpoint"] = Path(masks.openpifpaf.checkpoint).name
    # the run spans the work (its duration and system metrics are the stage's); a failure marks it FAILED
    with _masks_run(params, report) if track else contextlib.nullcontext() as run:
        start = time.perf_counter()
        with tqdm(total=total, desc=f"part masks ({source.name})", unit="img", disable=not progress) as bar:
            for folder, files in folders.items():
                folder_masks, keypoints, status = _folder_masks(folder, files, root.absolute(), source, masks, bar)
                path = write_folder(out_dir, folder, files, folder_masks, keypoints, status, info)
                report.no_person += status.count("no_person")
                report.not_listed += status.count("not_listed")
                report.store_bytes += sum(p.stat().st_size for p in path.iterdir())
        report.seconds = time.perf_counter() - start
        report.images = total
        if source.name == "coco_json" and total and report.not_listed == total:
            raise MasksError(
                f"the keypoint file {masks.coco_json} lists none of the {total} images; its file_name entries must be "
                f"paths relative to the data root, e.g. {next(iter(folders))}/{folders[next(iter(folders))][0]}"
            )
        report.coverage = compute_coverage(MaskStore(out_dir), splits)
        report.coverage_file = write_coverage(coverage_file or masks.coverage_file, report.coverage)
        summary = coverage_summary(report.coverage)
        report.metrics_file = write_coverage_summary(metrics_file or masks.metrics_file, summary)
        if run is not None:
            _log_results(report, summary)
            report.run_id = run.info.run_id
    return report


def write_masks_preview(
    params: Params,
    path: str | Path,
    benchmarks: str | Iterable[str] = ALL,
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    per_split: int = 8,
) -> Path:
    """Overlay sheet of the stored masks (:mod:`sanet.masks.preview`): one row per benchmark split.

    With ``all``, benchmarks found under the root whose masks have not been stored yet are left out; a named
    benchmark without stored masks is an error.
    """
    from sanet.masks.preview import write_preview

    root = Path(root if root is not None else params.data.root)
    store = MaskStore(out_dir if out_dir is not None else params.masks.out_dir, root)
    stored = set(store.folders())
    if not stored:
        raise MasksError(f"no masks are stored in {store.out_dir}; run `sanet masks --benchmark NAME|all` first")
    rows: dict[str, list[str]] = {}
    for name in resolve_benchmarks(benchmarks, root):
        splits = benchmark_splits(build_benchmark(name, root))
        missing = {key.rpartition("/")[0] for keys in splits.values() for key in keys} - stored
        if missing:
            if benchmarks == ALL or ALL in benchmarks:
                continue
            raise MasksError(f"no masks stored for {name} ({', '.join(sorted(missing))}); run `sanet masks` first")
        rows.update({f"{name}/{split}": keys for split, keys in splits.items()})
    if not rows:
        raise MasksError(f"no benchmark under {root} has masks stored in {store.out_dir}; run `sanet masks` first")
    return write_preview(path, store, root, rows, per_split=per_split, min_confidence=params.masks.min_confidence)


@contextlib.contextmanager
def _masks_run(params: Params, report: MasksReport) -> Iterator[ActiveRun]:
    """The `masks` run of a pipeline, open while the masks are computed: params and tags (source, device)."""
    from sanet.infra.tracking import run_tags, start_run

    tags = run_tags(params, "", stage="masks", extra={"source": report.source, "device": report.device})
    with start_run(params, stage="masks", run_name=f"masks {report.source} ({params.profile})", tags=tags) as run:
        yield run


def _log_results(report: MasksReport, summary: dict[str, float | int]) -> None:
    """The run's metrics and files: the coverage summary (`masks/<name>`), coverage per split and part
    (`masks/<benchmark>/<split>/<part>`, the fraction of images showing the part), the speed."""
    import mlflow

    from sanet.infra.tracking import log_file

    metrics = {"masks/images": float(report.images), "masks/images_per_second": report.images_per_second}
    metrics["masks/no_person"] = float(report.no_person)
    metrics |= {f"masks/{name}": float(value) for name, value in summary.items() if name != "images"}
    for benchmark, splits in report.coverage.items():
        for split, values in splits.items():
            for key, value in values.items():
                if key not in ("images", "no_person"):
                    metrics[f"masks/{benchmark}/{split}/{key}"] = float(value)
    mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
    for path in (report.coverage_file, report.metrics_file):
        if path is not None:
            log_file(path, "masks")
