"""The study's two PNGs: optimisation history (value per trial, best so far) and parameter importances.

Drawn directly with matplotlib's object API (no pyplot, no global backend) in matplotlib's default style whatever
the user's matplotlibrc, without a version or date in the metadata: the same study gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["history_png", "importance_png"]

DPI = 110


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _draw(width: float, height: float, draw: Any) -> bytes:
    import matplotlib.style
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        figure = Figure(figsize=(width, height), layout="constrained")
        draw(figure, figure.add_subplot())
        return _png(figure)


def history_png(title: str, history: Sequence[Mapping[str, Any]], metric: str) -> bytes:
    """Every finished trial's value (pruned trials at their last reported value) and the best value so far."""

    def draw(figure: Figure, ax: Any) -> None:
        from matplotlib.ticker import MaxNLocator

        complete = [(h["number"], 100 * h["value"]) for h in history if h["state"] == "COMPLETE"]
        pruned = [
            (h["number"], 100 * h["last"]) for h in history if h["state"] == "PRUNED" and h.get("last") is not None
        ]
        if complete:
            ax.scatter(*zip(*complete, strict=True), color="tab:blue", label="complete trial", zorder=3)
            best, steps = float("-inf"), []
            for number, value in complete:
                best = max(best, value)
                steps.append((number, best))
            ax.step(*zip(*steps, strict=True), where="post", color="tab:red", label="best so far")
        if pruned:
            ax.scatter(*zip(*pruned, strict=True), color="tab:gray", marker="x", label="pruned (last value)", zorder=3)
        if not complete and not pruned:
            ax.text(0.5, 0.5, "no finished trial yet", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(loc="best")
            ax.set_ylim(0, 105)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)

    return _draw(7.0, 4.2, draw)


def importance_png(title: str, importances: Mapping[str, float], note: str | None = None) -> bytes:
    """Horizontal bars of the parameter importances (largest on top); `note` instead when there are none."""

    def draw(figure: Figure, ax: Any) -> None:
        if note or not importances:
            ax.text(0.5, 0.5, note or "no importances", ha="center", va="center", transform=ax.transAxes, wrap=True)
            ax.set_axis_off()
        else:
            names = sorted(importances, key=lambda name: (importances[name], name))
            ax.barh(names, [importances[name] for name in names], color="tab:blue")
            for y, name in enumerate(names):
                ax.text(importances[name], y, f" {importances[name]:.2f}", va="center")
            ax.set_xlim(0, 1.1)
            ax.set_xlabel("importance (sums to 1)")
        ax.set_title(title)

    return _draw(6.0, 1.6 + 0.5 * max(1, len(importances)), draw)
