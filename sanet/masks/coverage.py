"""Coverage of the stored masks: per benchmark split, the fraction of images in which each part is visible.

It is the mask stage's sanity check: whole-body galleries should show nearly every part, while
partial query sets (crops, occlusions) show fewer lower bodies and feet. A source that finds nobody shows up as a
high ``no_person`` count and low fractions everywhere. The full table (every benchmark, split and part: 120
numbers) is a committed file; its summary (`coverage_summary`: seven numbers) is the stage's DVC metric, so that
`dvc metrics show` and `dvc exp show` stay readable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sanet.contracts.parts import PARTS
from sanet.infra.atomic import atomic_write
from sanet.masks.mask_files import MaskStore

__all__ = [
    "Coverage",
    "compute_coverage",
    "coverage_summary",
    "format_coverage",
    "write_coverage",
    "write_coverage_summary",
]

Coverage = dict[str, dict[str, dict[str, float | int]]]
"""{benchmark: {split: {"images": n, "no_person": k, "head": fraction, ..., "global": fraction}}}."""


def compute_coverage(store: MaskStore, splits: Mapping[str, Mapping[str, Sequence[str]]]) -> Coverage:
    """Coverage of each benchmark split, given its image keys ({benchmark: {split: [path relative to root]}})."""
    result: Coverage = {}
    for benchmark, by_split in splits.items():
        result[benchmark] = {}
        for split, keys in by_split.items():
            visible = np.zeros((len(keys), len(PARTS)), dtype=bool)
            no_person = 0
            for i, key in enumerate(keys):
                folder, _, name = key.rpartition("/")
                stored = store.folder(folder)
                row = stored.rows[name]
                visible[i] = stored.visible[row]
                no_person += row in stored.no_person_rows
            fractions = visible.mean(axis=0) if len(keys) else np.zeros(len(PARTS))
            entry: dict[str, float | int] = {"images": len(keys), "no_person": no_person}
            entry.update({part: round(float(f), 4) for part, f in zip(PARTS, fractions, strict=True)})
            result[benchmark][split] = entry
    return result


def format_coverage(coverage: Coverage) -> str:
    """An aligned table: one row per benchmark split, the percentage of images showing each part."""
    header = ["benchmark", "split", "images", "no_person", *PARTS]
    rows = [header]
    for benchmark, by_split in coverage.items():
        for split, entry in by_split.items():
            rows.append(
                [benchmark, split, str(entry["images"]), str(entry["no_person"])]
                + [f"{100 * float(entry[p]):.1f}%" for p in PARTS]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def write_coverage(path: str | Path, coverage: Coverage) -> Path:
    """Write the coverage as JSON (sorted keys, so that an unchanged result leaves the file unchanged), atomically."""
    text = json.dumps(coverage, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def coverage_summary(coverage: Coverage) -> dict[str, float | int]:
    """Seven numbers for `dvc metrics show`: images, the share in which the source found nobody, and per part the
    share of all images showing it (every benchmark split pooled, weighted by its images)."""
    entries = [entry for by_split in coverage.values() for entry in by_split.values()]
    images = sum(int(entry["images"]) for entry in entries)
    summary: dict[str, float | int] = {"images": images}
    summary["no_person_rate"] = round(sum(int(e["no_person"]) for e in entries) / images, 4) if images else 0.0
    for part in PARTS:
        shown = sum(float(entry[part]) * int(entry["images"]) for entry in entries)
        summary[f"visible/{part}"] = round(shown / images, 4) if images else 0.0
    return summary


def write_coverage_summary(path: str | Path, summary: Mapping[str, float | int]) -> Path:
    """Write the summary as JSON (sorted keys), atomically: an unchanged result leaves the file unchanged."""
    text = json.dumps(dict(summary), indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))
