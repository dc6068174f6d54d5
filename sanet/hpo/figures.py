"""The study's four PNGs, drawn by Optuna's own `optuna.visualization.matplotlib` functions.

- `history`: every COMPLETE trial's value and the best so far (`plot_optimization_history`);
- `slice`: the value against each searched parameter, one panel per parameter (`plot_slice`): the parameter axis
  that tells which setting scored what;
- `intermediate`: every trial's validation score per epoch, pruned ones included (`plot_intermediate_values`);
- `importance`: the fANOVA importances, seeded (`plot_param_importances`), or, when the summary has a note instead
  (too few complete trials, ties, a one-parameter space: `sanet.hpo.summary`), a figure showing that note.

Files `<hpo.reports_dir>/<space>-<kind>.png` (`figure_file`, kinds `FIGURES`). Optuna draws with pyplot: the figures
are drawn with the non-interactive Agg backend (`matplotlib.use("Agg")`, as sanet's other figures), from
matplotlib's default style (whatever the user's matplotlibrc) with Optuna's ggplot on top, inside a style context
that restores the global settings Optuna changes, and every figure is closed once saved. The PNGs carry no version
or date: the same study gives the same bytes.
"""

from __future__ import annotations

import io
import math
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

__all__ = ["DPI", "FIGURES", "figure_file", "study_figures"]

DPI = 110
FIGURES: tuple[str, ...] = ("history", "slice", "intermediate", "importance")
"""The kinds of figure a summary writes, in this order: `<space>-<kind>.png`."""


def figure_file(space: str, kind: str) -> str:
    """`<space>-<kind>.png`, e.g. `joint-slice.png` (kind one of FIGURES)."""
    if kind not in FIGURES:
        raise ValueError(f"unknown figure {kind!r}; one of {', '.join(FIGURES)}")
    return f"{space}-{kind}.png"


@contextmanager
def _pyplot() -> Iterator[Any]:
    """pyplot on Agg, in matplotlib's default style; Optuna's `plt.style.use("ggplot")` is undone on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.style
    import optuna

    with matplotlib.style.context("default"), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # plot_slice etc. are "experimental"
        warnings.filterwarnings("ignore", "Attempting to set identical", UserWarning)  # a slice of one value
        yield plt


def _figure(axes: Any) -> Figure:
    """The figure of what an Optuna plot returns: one Axes, or an array of them."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def _png(plt: Any, figure: Figure) -> bytes:
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def _note(plt: Any, title: str, note: str) -> Figure:
    """A figure that says why there is no plot (the note), in place of one."""
    figure, ax = plt.subplots(figsize=(6.4, 2.4))
    ax.text(0.5, 0.5, textwrap.fill(note, 70), ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    ax.set_title(title, loc="left")
    return figure


def _log_ticks(low: float, high: float) -> list[float]:
    """1, 2 and 5 per decade within [low, high]; a few evenly spaced values when fewer than two of those fall in."""
    from matplotlib.ticker import MaxNLocator

    ticks = [
        m * 10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1) for m in (1, 2, 5)
    ]
    inside = [float(f"{t:.12g}") for t in ticks if low <= t <= high]
    if len(inside) < 2:
        inside = [float(f"{t:.12g}") for t in MaxNLocator(nbins=3).tick_values(low, high) if low <= t <= high]
    return inside


def _readable_log_axes(axes: Sequence[Any]) -> None:
    """Log-scaled parameter axes (the triplet weight) labelled with a few plain numbers, none overlapping."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for ax in axes:
        if ax.get_xscale() == "log":
            low, high = sorted(ax.get_xlim())
            ax.xaxis.set_major_locator(FixedLocator(_log_ticks(low, high)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())


def _history(plt: Any, study: optuna.Study, title: str, target: str) -> Figure:
    from optuna.visualization.matplotlib import plot_optimization_history

    ax = plot_optimization_history(study, target_name=target)
    ax.set_title(f"{title}: optimisation history")
    return _figure(ax)


def _slice(plt: Any, study: optuna.Study, title: str, target: str, params: Sequence[str]) -> Figure:
    from optuna.visualization.matplotlib import plot_slice

    axes = plot_slice(study, params=list(params), target_name=target)
    figure = _figure(axes)
    panels = list(axes.flat) if hasattr(axes, "flat") else [axes]
    if len(panels) == 1:
        panels[0].set_title(f"{title}: parameter slice")
    else:
        figure.suptitle(f"{title}: parameter slices")
    _readable_log_axes(panels)
    return figure


def _intermediate(plt: Any, study: optuna.Study, title: str) -> Figure:
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization.matplotlib import plot_intermediate_values

    if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        return _note(plt, f"{title}: intermediate values", "no trial has reported a validation score yet")
    ax = plot_intermediate_values(study)
    ax.set_title(f"{title}: validation score per epoch")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation score")
    return _figure(ax)


def _importance(plt: Any, study: optuna.Study, title: str, target: str, note: str | None, seed: int) -> Figure:
    import optuna
    from optuna.visualization.matplotlib import plot_param_importances

    if note is not None:
        return _note(plt, f"{title}: parameter importance", note)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    ax = plot_param_importances(study, evaluator=evaluator, target_name=target)
    ax.set_title(f"{title}: parameter importance (fANOVA)", loc="left")
    return _figure(ax)


def study_figures(
    study: optuna.Study,
    title: str,
    params: Sequence[str],
    importance_note: str | None,
    seed: int,
    target: str = "validation score",
) -> dict[str, bytes]:
    """The PNG bytes of each of FIGURES for `study` (module docstring), keyed by kind.

    Args:
        title: what the figures' titles start with (the study's name).
        params: the searched parameters, in the order of the slice plot's panels.
        importance_note: why there are no importances (the summary's `importances_note`): the importance figure
            shows it instead of bars; None: fANOVA importances seeded with `seed`, as the summary computes them.
        target: the objective's name on the value axes.
    """
    with _pyplot() as plt:
        drawn = {
            "history": lambda: _history(plt, study, title, target),
            "slice": lambda: _slice(plt, study, title, target, params),
            "intermediate": lambda: _intermediate(plt, study, title),
            "importance": lambda: _importance(plt, study, title, target, importance_note, seed),
        }
        return {kind: _png(plt, drawn[kind]()) for kind in FIGURES}
