"""`sanet registry show`: every version of the registered model as a fixed-width table, newest first.

    sanet in sqlite:///mlflow.db: 3 versions; champion v3, candidate v3 (Rank-1 and mAP in %)
                                                                             market1501   partial_reid
    version  aliases             created (UTC)     gate           git sha       Rank-1   mAP  Rank-1   mAP
    v3       candidate,champion  2026-11-25 12:56  failed+manual  3f9a1c2b4d5e    82.0  62.0    49.0  37.0
    v2       -                   2026-11-25 12:51  passed         3f9a1c2b4d5e    81.0  61.0    49.0  40.0
    v1       -                   2026-11-25 12:45  first          0b7e55d21c9a    80.0  60.0    50.0  40.0

Rank-1 and mAP are percentages with one decimal, for each benchmark of `data.evaluate` that some version has; '-'
where a version lacks one. `+manual` in the gate column: `sanet promote` made that version the champion by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sanet.registry.client import (
    CANDIDATE,
    CHAMPION,
    aliases,
    all_versions,
    global_tracking_uri,
    mlflow_errors,
    no_model_error,
    registered_model,
    registry_client,
    version_results,
)

if TYPE_CHECKING:
    from sanet.config import Params

__all__ = ["format_table", "registry_table"]

_METRICS = (("rank1", "Rank-1"), ("mAP", "mAP"))
_GAP = "  "


def _created(milliseconds: int | None) -> str:
    if not milliseconds:
        return "-"
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_table(header: Sequence[str], groups: Sequence[tuple[str, int]], rows: Sequence[Sequence[str]]) -> str:
    """Fixed-width text: `groups` are (title, number of columns) spans over the last columns, centred above them.

    Text columns are left-aligned; the metric columns (those under a group) are right-aligned.
    """
    spanned = sum(count for _, count in groups)
    first = len(header) - spanned
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    column = first
    for title, count in groups:  # a group's title may be wider than its columns: widen the last one
        span = sum(widths[column : column + count]) + len(_GAP) * (count - 1)
        if len(title) > span:
            widths[column + count - 1] += len(title) - span
        column += count

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        parts = [f"{cell:<{width}}" if i < first else f"{cell:>{width}}" for i, (cell, width) in pairs]
        return _GAP.join(parts).rstrip()

    lines = []
    if groups:
        titles = [" " * widths[i] for i in range(first)]
        column = first
        for title, count in groups:
            span = sum(widths[column : column + count]) + len(_GAP) * (count - 1)
            titles.append(f"{title:^{span}}")
            column += count
        lines.append(_GAP.join(titles).rstrip())
    lines.append(line(header))
    lines.extend(line(row) for row in rows)
    return "\n".join(lines)


def registry_table(params: Params) -> str:
    """The registered model `registry.model_name` as text: a title line, then one row per version, newest first.

    Raises:
        TrackingError: the tracking store does not answer (checked first).
        RegistryError: the registry has no model of that name (says how to create it).
    """
    from sanet.infra.preflight import redact
    from sanet.infra.tracking import check_tracking_uri, tracking_uri

    uri = tracking_uri(params)
    check_tracking_uri(uri)
    name = params.registry.model_name
    client = registry_client(uri)
    with global_tracking_uri(uri), mlflow_errors(uri, f"reading {name!r}"):
        if registered_model(client, name) is None:
            raise no_model_error(name, uri)
        versions = all_versions(client, name)
        by_version: dict[int, list[str]] = {}
        for alias, number in aliases(client, name).items():
            by_version.setdefault(number, []).append(alias)
        results = {int(v.version): version_results(client, v)[0] for v in versions}
    benchmarks = [b for b in params.data.evaluate if any(b in metrics for metrics in results.values())]
    header = ["version", "aliases", "created (UTC)", "gate", "git sha"]
    header += [label for _ in benchmarks for _, label in _METRICS]
    rows = []
    for v in versions:
        number = int(v.version)
        gate = v.tags.get("gate", "-")
        if v.tags.get("promoted_by") == "manual":
            gate += "+manual"
        row = [
            f"v{number}",
            ",".join(sorted(by_version.get(number, []))) or "-",
            _created(v.creation_timestamp),
            gate,
            v.tags.get("git_sha", "")[:12] or "-",
        ]
        row += [_percent(results[number].get(b, {}).get(metric)) for b in benchmarks for metric, _ in _METRICS]
        rows.append(row)
    champion = next((n for n, names in by_version.items() if CHAMPION in names), None)
    candidate = next((n for n, names in by_version.items() if CANDIDATE in names), None)
    title = (
        f"{name} in {redact(uri)}: {len(versions)} version{'s' if len(versions) != 1 else ''}; champion "
        f"{f'v{champion}' if champion is not None else 'none'}, candidate "
        f"{f'v{candidate}' if candidate is not None else 'none'}"
    )
    if benchmarks:
        title += " (Rank-1 and mAP in %)"
    return title + "\n" + format_table(header, [(b, len(_METRICS)) for b in benchmarks], rows)
