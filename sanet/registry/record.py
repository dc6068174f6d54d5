"""How a registration is recorded: the version's tags and `reports/registry.json`.

The version carries a handful of tags (the gate's decision, git sha, data md5, headline Rank-1); the register run it
names holds the full results, test-set md5s and the gate's numbers (`sanet.registry.client`); registry.json holds the
results and the decision, never the run-dependent provenance (git sha, runs, pipeline run: it is a DVC output, and
the sidecar `registry.provenance.json` holds them). registry.json is written atomically, keys sorted, indent 2: the same
registration always gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sanet.infra.atomic import atomic_write
from sanet.registry.client import tag_value
from sanet.registry.gate import GATE_METRICS, GateDecision

__all__ = ["decision_tags", "headline_tags", "result_tags", "write_record"]


def result_tags(metrics: Mapping[str, Mapping[str, float]], test_data: Mapping[str, str]) -> dict[str, str]:
    """The register run's `<benchmark>/data_md5` tags (the test set each result was measured on)."""
    return {f"{benchmark}/data_md5": test_data[benchmark] for benchmark in metrics if test_data.get(benchmark)}


def headline_tags(metrics: Mapping[str, Mapping[str, float]], partial: Iterable[str]) -> dict[str, str]:
    """The version's headline: the mean Rank-1 over the holistic and over the `partial` benchmarks evaluated."""
    partial = set(partial)
    groups = {
        "mean_rank1_holistic": [v["rank1"] for b, v in metrics.items() if b not in partial and "rank1" in v],
        "mean_rank1_partial": [v["rank1"] for b, v in metrics.items() if b in partial and "rank1" in v],
    }
    return {name: tag_value(round(sum(values) / len(values), 6)) for name, values in groups.items() if values}


def decision_tags(decision: GateDecision, champion_version: int | None, tolerance: Any) -> dict[str, str]:
    """`gate`, `gate_reason`, `gate_champion_version` ('' when none), `gate_tolerance_<metric>` and the deltas."""
    tags = {
        "gate": decision.kind,
        "gate_reason": decision.reason,
        "gate_champion_version": tag_value(champion_version),
    }
    tags.update({f"gate_tolerance_{metric}": tag_value(getattr(tolerance, metric)) for metric in GATE_METRICS})
    for comparison in decision.comparisons:
        delta = "n/a" if comparison.delta is None else tag_value(comparison.delta)
        tags[f"gate/{comparison.benchmark}/{comparison.metric}_delta"] = delta
    return tags


def write_record(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write `record` as JSON to `path` atomically (sorted keys, indent 2, final newline)."""
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))
