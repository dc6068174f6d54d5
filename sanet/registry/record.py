"""How a registration is recorded: the version's tags and `reports/registry.json`.

Both hold the benchmark results, the training and test data md5s and the gate's decision with its numbers, so the
decision can be read in the MLflow UI and in the repository. The tags also hold the run-dependent provenance (git
sha, runs, pipeline run); registry.json does not (it is a DVC output: `sanet.registry.registration`, and the sidecar
`registry.provenance.json` holds them). registry.json is written atomically, keys sorted, indent 2: the same
registration always gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sanet.infra.atomic import atomic_write
from sanet.registry.client import tag_value
from sanet.registry.gate import GATE_METRICS, GateDecision

__all__ = ["decision_tags", "result_tags", "write_record"]


def result_tags(
    metrics: Mapping[str, Mapping[str, float]], test_data: Mapping[str, str], flat: Mapping[str, Any]
) -> dict[str, str]:
    """`<benchmark>/<metric>`, `<benchmark>/data_md5` and `params/<name>` tags."""
    tags: dict[str, str] = {}
    for benchmark, values in metrics.items():
        tags.update({f"{benchmark}/{metric}": tag_value(value) for metric, value in values.items()})
        if test_data.get(benchmark):
            tags[f"{benchmark}/data_md5"] = test_data[benchmark]
    tags.update({f"params/{name}": tag_value(value) for name, value in flat.items()})
    return tags


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
