"""How the report writes numbers, shared by the Markdown, the terminal table and the figures: our fractions as
percentages with one decimal, the paper's percentages, differences in points, and the benchmarks' display names."""

from __future__ import annotations

from sanet.report import paper_results as paper

LABELS: dict[str, str] = {
    "rank1": "Rank-1",
    "rank3": "Rank-3",
    "rank5": "Rank-5",
    "rank10": "Rank-10",
    "mAP": "mAP",
    "mINP": "mINP",
}
DASH = "–"
NOT_EVALUATED = "not evaluated"


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal."""
    return DASH if value is None else f"{100 * value:.1f}"


def published_percent(value: float | None) -> str:
    """A number of the paper (already a percentage) with one decimal."""
    return DASH if value is None else f"{value:.1f}"


def points_diff(ours: float | None, published: float | None) -> str:
    """ours (a fraction) - published (percent), in points, from the one-decimal numbers the table shows."""
    if ours is None or published is None:
        return DASH
    points = round(float(percent(ours)) - published, 1) + 0.0  # + 0.0: no "-0.0"
    return f"{points:+.1f}"


def benchmark_name(benchmark: str) -> str:
    """The display name of a benchmark (its key when unknown)."""
    return paper.BENCHMARK_NAMES.get(benchmark, benchmark)
