"""The promotion gate: may a candidate model replace the champion? A pure function, without MLflow.

The candidate passes when, on every benchmark the champion was measured on, neither its mAP nor its Rank-1 drops by
more than the tolerance below the champion's (fractions: 0.01 = one point). Improvements always pass; a drop of
exactly the tolerance passes. A benchmark the champion has but the candidate lacks, or one measured on another test
set (a different `data_md5` of query + gallery), cannot be compared, and the gate fails: the numbers would not say
whether the candidate is better. The manual override is `sanet promote`. Without a champion, the candidate becomes
the champion (kind "first").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sanet.config import GateTolerance

__all__ = ["EPSILON", "GATE_METRICS", "Comparison", "GateDecision", "evaluate_gate"]

GATE_METRICS: tuple[str, ...] = ("mAP", "rank1")
"""The metrics the gate compares, in this order (names as in metrics.json and the `<benchmark>/<metric>` keys)."""

EPSILON = 1e-9
"""Slack for floating-point noise: 0.49 - 0.50 is -0.010000000000000009, which is exactly the tolerance 0.01."""

_LABELS = {"mAP": "mAP", "rank1": "Rank-1"}
_EMPTY: Mapping[str, str] = {}


@dataclass(frozen=True)
class Comparison:
    """One benchmark and metric: candidate and champion values, `delta` = candidate - champion, and whether it passes.

    `candidate` (and so `delta`) is None where the candidate lacks the benchmark; `ok` is False there and where the
    test sets differ.
    """

    benchmark: str
    metric: str
    candidate: float | None
    champion: float
    delta: float | None
    tolerance: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the registry.json entry)."""
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    """The gate's outcome: `kind` is "first" (no champion yet), "passed" or "failed"; `reason` is one sentence."""

    passed: bool
    kind: Literal["first", "passed", "failed"]
    reason: str
    comparisons: list[Comparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the registry.json `decision` entry, without the champion version)."""
        return {
            "passed": self.passed,
            "kind": self.kind,
            "reason": self.reason,
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def _points(fraction: float) -> str:
    return f"{100 * fraction:.1f}"


def evaluate_gate(
    candidate: Mapping[str, Mapping[str, float]],
    champion: Mapping[str, Mapping[str, float]] | None,
    tolerance: GateTolerance,
    candidate_data: Mapping[str, str] = _EMPTY,
    champion_data: Mapping[str, str] = _EMPTY,
) -> GateDecision:
    """Decide whether `candidate` may replace `champion` (both `{benchmark: {metric: fraction}}`).

    `tolerance` gives the allowed drop per metric (`mAP`, `rank1`, fractions). `candidate_data` / `champion_data` map
    a benchmark to the `data_md5` of its test set; where both are known and differ, the benchmark is not comparable.
    Benchmarks only the candidate has are not compared (the champion has nothing to lose there). Comparisons come
    in the candidate's benchmark order, then the benchmarks only the champion has (sorted), metrics in
    `GATE_METRICS` order.
    """
    if champion is None:
        return GateDecision(True, "first", "no champion yet: the candidate becomes the champion")
    order = [b for b in candidate if b in champion] + sorted(b for b in champion if b not in candidate)
    comparisons: list[Comparison] = []
    regressions: list[str] = []
    missing: list[str] = []
    other_data: list[str] = []
    for benchmark in order:
        theirs = champion[benchmark]
        ours = candidate.get(benchmark)
        ours_md5, theirs_md5 = candidate_data.get(benchmark, ""), champion_data.get(benchmark, "")
        same_data = not (ours_md5 and theirs_md5 and ours_md5 != theirs_md5)
        if ours is not None and not same_data:
            other_data.append(benchmark)
        for metric in GATE_METRICS:
            if metric not in theirs:
                continue
            allowed = float(getattr(tolerance, metric))
            value = None if ours is None else ours.get(metric)
            if value is None:
                if ours is not None:  # evaluated, but without this metric
                    missing.append(f"{benchmark} {_LABELS[metric]}")
                comparisons.append(Comparison(benchmark, metric, None, float(theirs[metric]), None, allowed, False))
                continue
            delta = round(float(value) - float(theirs[metric]), 9)  # float noise off, what a tag shows
            within = delta >= -allowed - EPSILON
            comparisons.append(
                Comparison(benchmark, metric, float(value), float(theirs[metric]), delta, allowed, within and same_data)
            )
            if same_data and not within:
                regressions.append(
                    f"{benchmark} {_LABELS[metric]} dropped {_points(-delta)} points "
                    f"({_points(theirs[metric])}% -> {_points(value)}%), beyond the tolerance of {_points(allowed)}"
                )
        if ours is None:
            missing.append(benchmark)
    problems = []
    if regressions:
        problems.append("; ".join(regressions))
    if missing:
        problems.append(f"not comparable: the candidate was not evaluated on {', '.join(missing)}")
    if other_data:
        problems.append(
            f"not comparable: {', '.join(other_data)} measured on another test set than the champion's (data_md5)"
        )
    if problems:
        reason = "; ".join(problems) + "; override with `sanet promote` if it should be the champion anyway"
        return GateDecision(False, "failed", reason, comparisons)
    if not comparisons:
        reason = "the champion has no benchmark results to compare with: the candidate becomes the champion"
    else:
        reason = (
            f"no benchmark regresses beyond the tolerance (mAP {_points(tolerance.mAP)}, Rank-1 "
            f"{_points(tolerance.rank1)} points) on {', '.join(dict.fromkeys(c.benchmark for c in comparisons))}"
        )
    return GateDecision(True, "passed", reason, comparisons)
