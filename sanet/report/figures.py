"""The report's PNG figures: CMC curves, training curves, and ours vs the paper as grouped bars.

The PNGs are byte-identical for the same inputs (matplotlib's default style whatever the user's matplotlibrc, no
version or date in the metadata), so that DVC sees an unchanged figure as unchanged. matplotlib is imported only
when a figure is drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sanet.contracts.results import Evaluation, Training, is_number
from sanet.report import paper_results as paper
from sanet.report.formatting import LABELS, benchmark_name, percent

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


DPI = 120


def _png(figure: Figure) -> bytes:
    """PNG bytes without the matplotlib version or a date in the metadata: the same figure gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _figure(width: float, height: float, columns: int = 1, rows: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, list(figure.subplots(rows, columns, squeeze=False).flat)


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_cmc(evaluations: Mapping[str, Evaluation], synthetic: bool) -> bytes:
    """CMC curves of every evaluated benchmark (ranks on x, matching rate in percent on y)."""
    figure, (ax,) = _figure(7.5, 4.8)
    for name, evaluation in evaluations.items():
        ranks = range(1, len(evaluation.cmc) + 1)
        ax.plot(
            ranks,
            [100 * v for v in evaluation.cmc],
            label=f"{benchmark_name(name)} (Rank-1 {percent(evaluation.cmc[0])}%)",
        )
    longest = max(len(e.cmc) for e in evaluations.values())
    ax.set_xlim(1, max(longest, 2))
    _integer_ticks(ax)
    ax.set_ylim(0, 100)
    ax.set_xlabel("Rank")
    ax.set_ylabel("Matching rate (%)")
    ax.set_title("CMC curves" + (" (synthetic benchmark)" if synthetic else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _png(figure)


def plot_training(training: Training) -> bytes | None:
    """Losses and learning rate per epoch, and the validation Rank-1/mAP points; None without history."""
    history = training.history
    if not history:
        return None
    validated = [row for row in history if row.get("rank1") is not None or row.get("mAP") is not None]
    untrained = (training.summary or {}).get("untrained")
    with_validation = bool(validated) or isinstance(untrained, dict)
    figure, axes = _figure(13.0 if with_validation else 9.0, 4.2, 3 if with_validation else 2)
    epochs = [float(row["epoch"] or 0) for row in history]

    def series(key: str) -> tuple[list[float], list[float]]:
        """(epochs, values) of the rows with a finite `key` (validation columns are empty on most rows)."""
        xs, ys = [], []
        for row in history:
            value = row.get(key)
            if value is not None and math.isfinite(value):
                xs.append(float(row["epoch"] or 0))
                ys.append(value)
        return xs, ys

    ax = axes[0]
    positive = True
    for key, label in (("loss", "total"), ("id", "ID"), ("triplet", "triplet"), ("focal", "focal")):
        xs, ys = series(key)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
            positive &= all(y > 0 for y in ys)
    if positive and ax.lines:
        ax.set_yscale("log")
    _integer_ticks(ax)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss (epoch mean)")
    ax.set_title("Training losses")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=9)

    ax = axes[1]
    xs, ys = series("lr")
    ax.plot(xs, ys, marker="o", markersize=3, color="tab:purple")
    _integer_ticks(ax)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Learning rate")
    ax.set_title("Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(True, alpha=0.3)

    if with_validation:
        ax = axes[2]
        for key, label, color in (("rank1", "Rank-1", "tab:blue"), ("mAP", "mAP", "tab:orange")):
            xs, ys = series(key)
            if isinstance(untrained, dict) and is_number(untrained.get(key)):
                xs, ys = [0.0, *xs], [float(untrained[key]), *ys]
            ax.plot(xs, [100 * y for y in ys], marker="o", color=color, label=label)
        ax.set_xlim(min([0.0, *epochs]) - 0.5, max(epochs) + 0.5)
        _integer_ticks(ax)
        ax.set_ylim(0, 100)
        ax.set_xlabel("Epoch (0: untrained)")
        ax.set_ylabel("Validation (%)")
        ax.set_title("Validation on the training benchmark")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9)
    return _png(figure)


def plot_comparison(evaluations: Mapping[str, Evaluation], synthetic: bool) -> bytes:
    """Grouped bars of Rank-1 and mAP per benchmark: ours, the paper's SANet and HPNet (ours only when synthetic)."""
    names = list(evaluations)
    methods: list[tuple[str, Callable[[str, str], float | None], str]] = [
        ("Ours", lambda b, m: 100 * evaluations[b].metrics[m], "tab:blue")
    ]
    if not synthetic:
        methods += [
            ("SANet (paper)", lambda b, m: paper.paper_value(paper.SANET, b, m), "tab:orange"),
            ("HPNet (paper)", lambda b, m: paper.paper_value(paper.HPNET, b, m), "tab:gray"),
        ]
    figure, axes = _figure(max(7.0, 1.3 * len(names) + 2.0), 7.5, rows=2)
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, ("rank1", "mAP"), strict=True):
        for index, (label, value, color) in enumerate(methods):
            xs, ys = [], []
            for position, name in enumerate(names):
                number = value(name, metric)
                if number is not None:
                    xs.append(position - 0.4 + width * (index + 0.5))
                    ys.append(number)
            bars = ax.bar(xs, ys, width=width, label=label, color=color)
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(range(len(names)), [benchmark_name(n) for n in names], rotation=20, ha="right")
        ax.set_ylim(0, 108)
        ax.set_ylabel(f"{LABELS[metric]} (%)")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.02), ncols=len(methods), frameon=False)
    figure.suptitle(
        "Synthetic benchmark: ours only (the paper's numbers are on the real benchmarks)"
        if synthetic
        else "Ours vs the paper (SANet, HPNet)"
    )
    return _png(figure)


def render_figures(
    evaluations: Mapping[str, Evaluation], training: Training | None, synthetic: bool
) -> dict[str, bytes]:
    """The PNG bytes per figure name (`cmc`, `comparison`, and `training` with a history), drawn in
    matplotlib's default style."""
    import matplotlib.style

    with matplotlib.style.context("default"):  # the user's matplotlibrc must not change the pictures
        rendered = {"cmc": plot_cmc(evaluations, synthetic), "comparison": plot_comparison(evaluations, synthetic)}
        if training is not None and (curves := plot_training(training)) is not None:
            rendered["training"] = curves
    return rendered
