"""`diagnostics.png`: the method diagnostics of one evaluation in one figure of four panels.

1. visibility accuracy per part, queries and gallery side by side (predicted Eq. 5 vs the label masks);
2. mask variation per part: the mean per-cell standard deviation across images (and the mean probability);
3. the AFE routes of the query and gallery groups (partial vs holistic on partial benchmarks, Fig. 4a);
4. Rank-1 of the model's distance (Eq. 7), the global-only distance and the no-network floor, with chance.

A panel whose diagnostic is not available says why instead of plotting. The PNG carries no software or date
metadata, so the same diagnostics give the same bytes (with the same matplotlib).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sanet.infra.atomic import atomic_write

__all__ = ["write_diagnostics_figure"]

_TOP_ROUTES = 6


def _unavailable(axis: Any, title: str, note: str | None) -> None:
    axis.set_title(title, fontsize=9)
    axis.text(
        0.5,
        0.5,
        textwrap.fill(note or "not available", 40),
        ha="center",
        va="center",
        fontsize=8,
        transform=axis.transAxes,
    )
    axis.set_xticks([])
    axis.set_yticks([])


def _grouped_bars(axis: Any, labels: list[str], series: Mapping[str, list[float]]) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        axis.bar(x + (i - (len(series) - 1) / 2) * width, values, width=width, label=name)
    axis.set_xticks(x, labels, fontsize=7)
    axis.legend(fontsize=7)
    axis.grid(axis="y", alpha=0.3)


def _visibility_panel(axis: Any, visibility: Mapping[str, Any]) -> None:
    title = "visibility accuracy per part (predicted vs label)"
    if not visibility.get("available"):
        _unavailable(axis, title, visibility.get("note"))
        return
    parts = list(visibility["query"])
    series = {role: [visibility[role][p]["accuracy"] or 0.0 for p in parts] for role in ("query", "gallery")}
    _grouped_bars(axis, parts, series)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("accuracy")
    axis.set_title(title, fontsize=9)


def _masks_panel(axis: Any, masks: Mapping[str, Any]) -> None:
    title = "predicted masks across images: per-cell std (bars), mean probability (dots)"
    if not masks.get("available"):
        _unavailable(axis, title, masks.get("note"))
        return
    parts = list(masks["all"])
    x = np.arange(len(parts))
    std = [masks["all"][p]["std"] or 0.0 for p in parts]
    axis.bar(x, std, color="tab:blue")
    for i, value in enumerate(std):
        axis.text(i, value, f"{value:.4f}", ha="center", va="bottom", fontsize=7)
    axis.set_ylim(0, max(max(std) * 1.25, 0.05))
    axis.set_ylabel("mean per-cell std across images", fontsize=8)
    axis.set_xticks(x, parts, fontsize=7)
    twin = axis.twinx()
    twin.plot(x, [masks["all"][p]["mean"] or 0.0 for p in parts], "o", color="black")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("mean probability", fontsize=8)
    axis.set_title(title, fontsize=9)


def _routing_panel(axis: Any, routing: Mapping[str, Any]) -> None:
    title = "AFE routes (strides layer by layer)"
    if not routing.get("adaptive"):
        _unavailable(axis, title, routing.get("note"))
        return
    groups = routing["groups"]
    routes: list[str] = []
    for group in groups.values():
        routes += [r for r in list(group.get("routes", {}))[:_TOP_ROUTES] if r not in routes]
    labels = [
        f"{name}: {g['distinct_routes']} distinct, top {100 * g['top_route_share']:.0f}%" for name, g in groups.items()
    ]
    height = 0.8 / max(len(groups), 1)
    for i, (label, group) in enumerate(zip(labels, groups.values(), strict=True)):
        y = np.arange(len(routes)) + i * height
        axis.barh(y, [group.get("routes", {}).get(r, 0.0) for r in routes], height=height, label=label)
    axis.set_yticks(np.arange(len(routes)) + 0.4 - height / 2, routes, fontsize=6)
    axis.invert_yaxis()
    axis.set_xlim(0, 1.05)
    axis.set_xlabel("share of the group's images", fontsize=8)
    axis.legend(fontsize=7)
    axis.set_title(title, fontsize=9)


def _ranking_panel(axis: Any, diagnostics: Mapping[str, Any]) -> None:
    ranking, floor = diagnostics["ranking"], diagnostics["floor"]
    bars = {
        f"model ({ranking['model']['distance']})": ranking["model"]["rank1"],
        "global only": ranking["global_only"]["rank1"],
        "colour floor": floor.get("rank1") if floor.get("available") else None,
    }
    names = list(bars)
    values = [bars[n] or 0.0 for n in names]
    axis.bar(names, values, color=["tab:blue", "tab:orange", "tab:gray"])
    for x, name in enumerate(names):
        text = "n/a" if bars[name] is None else f"{100 * bars[name]:.1f}%"
        axis.text(x, values[x] + 0.02, text, ha="center", fontsize=8)
    chance = diagnostics.get("chance_rank1")
    if chance is not None:
        axis.axhline(chance, color="black", linestyle="--", linewidth=1, label=f"chance {100 * chance:.1f}%")
        axis.legend(fontsize=7)
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("Rank-1")
    axis.tick_params(axis="x", labelsize=8)
    axis.set_title("Eq. 7 vs global-only vs no-network floor", fontsize=9)


def write_diagnostics_figure(path: str | Path, diagnostics: Mapping[str, Any], title: str) -> Path:
    """Draw `compute_diagnostics`' dict (with the per-group route shares under `routing.groups.*.routes` when given)
    into the PNG at `path`, atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    _visibility_panel(axes[0, 0], diagnostics["visibility"])
    _masks_panel(axes[0, 1], diagnostics["masks"])
    _routing_panel(axes[1, 0], diagnostics["routing"])
    _ranking_panel(axes[1, 1], diagnostics)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
