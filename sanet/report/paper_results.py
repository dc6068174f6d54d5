"""The published numbers of SANet (Chen et al., BMVC 2023) that `sanet report` compares against.

Transcribed from the paper's Tables 1-4 (sections 4.3 and 4.4), in percent with one decimal as printed; `None` where
the paper prints "-". Kept in one small module so that the numbers can be checked against the paper in one place.
Keys are the project's benchmark names (`sanet.data.benchmarks.BENCHMARKS`) and metric names (`rank1`, `rank3`,
`rank5`, `mAP`), so a table row can be looked up with the same keys as our own `metrics.json`.

Which of our benchmarks each paper column is (DESIGN section 2): the paper's Partial-REID column is `partial_reid`
(occluded queries, HPNet's protocol), Partial-iLIDS-P is `partial_ilids_p` (the DSR release) and Partial-iLIDS-O is
`partial_ilids_o` (the FPR release). `partial_reid_cropped` has no column in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BENCHMARK_NAMES",
    "CITATION",
    "HPNET",
    "PAPER_AFE",
    "SANET",
    "TABLE1_BENCHMARKS",
    "TABLE1_METRICS",
    "TABLE2_BENCHMARKS",
    "TABLE2_METRICS",
    "TABLE3",
    "TABLE3_COMPONENTS",
    "TABLE3_LABELS",
    "TABLE3_METRICS",
    "TABLE4_KERNELS",
    "TABLE4_LAYERS",
    "TABLE4_METRICS",
    "paper_value",
]

CITATION = 'Chen et al., "SANet: Scale Adaptive Network for Partial Person Re-identification", BMVC 2023'

#: Display names, as the paper writes them (with the project's extra Partial-REID protocol).
BENCHMARK_NAMES: dict[str, str] = {
    "market1501": "Market-1501",
    "dukemtmc": "DukeMTMC-reID",
    "partial_reid": "Partial-REID",
    "partial_reid_cropped": "Partial-REID (cropped)",
    "partial_ilids_p": "Partial-iLIDS-P",
    "partial_ilids_o": "Partial-iLIDS-O",
}

#: Table 1: the partial benchmarks, in the paper's column order, and the metrics it reports for each.
TABLE1_BENCHMARKS: tuple[str, ...] = ("partial_reid", "partial_ilids_o", "partial_ilids_p")
TABLE1_METRICS: tuple[str, ...] = ("rank1", "rank3", "mAP")

#: Table 2: the holistic benchmarks.
TABLE2_BENCHMARKS: tuple[str, ...] = ("market1501", "dukemtmc")
TABLE2_METRICS: tuple[str, ...] = ("rank1", "mAP")

#: SANet's results (Tables 1 and 2).
SANET: dict[str, dict[str, float | None]] = {
    "partial_reid": {"rank1": 88.7, "rank3": 92.3, "mAP": 81.5},
    "partial_ilids_o": {"rank1": 84.9, "rank3": 89.1, "mAP": 86.5},
    "partial_ilids_p": {"rank1": 74.8, "rank3": 84.0, "mAP": 77.3},
    "market1501": {"rank1": 93.7, "mAP": 80.1},
    "dukemtmc": {"rank1": 85.5, "mAP": 67.1},
}

#: HPNet's results as the paper lists them (Table 1 only: HPNet has no row in Table 2).
HPNET: dict[str, dict[str, float | None]] = {
    "partial_reid": {"rank1": 85.7, "rank3": None, "mAP": 81.8},
    "partial_ilids_o": {"rank1": 72.0, "rank3": None, "mAP": 58.9},
    "partial_ilids_p": {"rank1": 68.9, "rank3": 80.7, "mAP": 72.2},
}

#: Table 3 (on Partial-iLIDS-P): the components, keyed by the project's `model.variant`, in the paper's row order.
TABLE3_METRICS: tuple[str, ...] = ("rank1", "rank3", "rank5", "mAP")
TABLE3: dict[str, dict[str, float | None]] = {
    "hpnet": {"rank1": 68.9, "rank3": 80.7, "rank5": 82.4, "mAP": 72.2},
    "global": {"rank1": 72.3, "rank3": 81.5, "rank5": 85.7, "mAP": 75.3},
    "fixed_fe": {"rank1": 73.9, "rank3": 79.0, "rank5": 83.2, "mAP": 76.3},
    "sanet": {"rank1": 74.8, "rank3": 84.0, "rank5": 84.9, "mAP": 77.3},
}
TABLE3_LABELS: dict[str, str] = {
    "hpnet": "HPNet",
    "global": "+ Global Branch",
    "fixed_fe": "+ Fixed FE",
    "sanet": "SANet",
}
#: The paper's AFE and MFE columns of Table 3.
TABLE3_COMPONENTS: dict[str, tuple[str, str]] = {
    "hpnet": ("×", "Local"),
    "global": ("×", "✓"),
    "fixed_fe": ("Fixed", "✓"),
    "sanet": ("✓", "✓"),
}

#: Table 4 (on Partial-iLIDS-P): AFE layer numbers (with 3 x 3 cells) and cell kernels (with 5 layers).
TABLE4_METRICS: tuple[str, ...] = ("rank1", "mAP")
TABLE4_LAYERS: dict[int, dict[str, float | None]] = {
    3: {"rank1": 74.8, "mAP": 76.8},
    5: {"rank1": 74.8, "mAP": 77.3},
    7: {"rank1": 72.3, "mAP": 75.2},
}
TABLE4_KERNELS: dict[int, dict[str, float | None]] = {
    1: {"rank1": 73.1, "mAP": 75.9},
    3: {"rank1": 74.8, "mAP": 77.3},
    5: {"rank1": 73.1, "mAP": 75.6},
}

#: The AFE setting of the paper's main results (layers, kernel): Table 4's layer rows use kernel 3, its kernel rows
#: 5 layers, and Tables 1-3 use both.
PAPER_AFE: tuple[int, int] = (5, 3)


def paper_value(table: Mapping[str, Mapping[str, float | None]], key: str, metric: str) -> float | None:
    """A paper number in percent, or None where the paper prints "-" or has no such row or column."""
    return table.get(key, {}).get(metric)
