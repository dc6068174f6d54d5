"""The benchmark table for a terminal (`reports/benchmark.txt`, what `make demo` prints at the end): our headline
numbers per evaluated benchmark beside the paper's SANet, in aligned plain text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sanet.contracts.results import Evaluation, is_synthetic
from sanet.report import paper_results as paper
from sanet.report.formatting import NOT_EVALUATED, benchmark_name, percent, published_percent

if TYPE_CHECKING:
    from sanet.config import Params


def render_terminal_table(params: Params, evaluations: Mapping[str, Evaluation]) -> str:
    """The benchmark table for a terminal: one aligned row per evaluated benchmark, after a line naming the data."""
    if is_synthetic(evaluations):
        first = "Data: the project's synthetic benchmark (the paper's numbers are on the real ones: not comparable)"
    else:
        first = "Data: the real benchmarks (paper: SANet, BMVC 2023)"
    header = ["Benchmark", "Rank-1", "Rank-5", "mAP", "mINP", "Paper R-1", "Paper mAP"]
    rows = [
        [
            benchmark_name(name),
            *(percent(evaluation.metrics[m]) for m in ("rank1", "rank5", "mAP", "mINP")),
            published_percent(paper.paper_value(paper.SANET, name, "rank1")),
            published_percent(paper.paper_value(paper.SANET, name, "mAP")),
        ]
        for name, evaluation in evaluations.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    text = [first, line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    missing = [name for name in params.data.evaluate if name not in evaluations]
    if missing:
        text.append(f"{NOT_EVALUATED}: {', '.join(missing)}")
    return "\n".join(text)
