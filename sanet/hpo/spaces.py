"""The search spaces of `sanet hpo --space NAME`: which parameters each samples, and how (params.yaml `hpo.ranges`).

Optuna names a parameter by its short name (`afe_layers`: the study's parameter, the summary's `best.params`); the
trial's settings and its MLflow params use the dotted path of `params.yaml` (`model.afe.layers`), ready for `--set`.
`space_size` says whether a space is finite (only integers and categoricals: `afe_layers`, `afe_kernel`), which
decides its sampler (`sanet.hpo.search`); `searched_space` describes a space for the study's MLflow parent run.
optuna is not imported here: `suggest` only calls the trial object it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sanet.contracts.studies import SPACES
from sanet.hpo.errors import HPOError

if TYPE_CHECKING:
    import optuna

    from sanet.config import SearchRanges

__all__ = [
    "DOTTED",
    "SEARCH_PREFIX",
    "SPACES",
    "check_space",
    "searched_space",
    "space_params",
    "space_size",
    "suggest",
    "to_dotted",
]


DOTTED: Mapping[str, str] = {
    "afe_layers": "model.afe.layers",
    "afe_kernel": "model.afe.kernel",
    "triplet_weight": "loss.triplet_weight",
}
"""Optuna parameter name -> dotted key of params.yaml (and of the MLflow params)."""

SEARCH_PREFIX = "search: "
"""How the study's parent run marks a searched key's value: `model.afe.layers` = `search: int 1..8`."""

_SPACE_PARAMS: Mapping[str, tuple[str, ...]] = {
    "afe_layers": ("afe_layers",),
    "afe_kernel": ("afe_kernel",),
    "triplet_weight": ("triplet_weight",),
    "joint": ("afe_layers", "afe_kernel", "triplet_weight"),
}
_AFE_VARIANTS = ("fixed_fe", "sanet")  # the variants that have an AFE (model.variant)


def check_space(space: str) -> str:
    """Return `space` when it is one of `SPACES`; otherwise raise HPOError listing them."""
    if space not in _SPACE_PARAMS:
        raise HPOError(f"unknown search space {space!r}; allowed: {', '.join(SPACES)}")
    return space


def space_params(space: str) -> tuple[str, ...]:
    """The Optuna parameter names `space` samples, in a fixed order."""
    return _SPACE_PARAMS[check_space(space)]


def check_variant(space: str, variant: str) -> None:
    """Refuse to search AFE settings of a model without an AFE: every trial would train the same network."""
    afe = [name for name in space_params(space) if name.startswith("afe_")]
    if afe and variant not in _AFE_VARIANTS:
        raise HPOError(
            f"search space {space!r} samples {', '.join(afe)}, but model.variant {variant!r} has no AFE: "
            f"set model.variant to one of {', '.join(_AFE_VARIANTS)}, or search the triplet_weight space"
        )


def suggest(trial: optuna.trial.Trial, space: str, ranges: SearchRanges) -> dict[str, Any]:
    """Sample the parameters of `space` from `ranges`; returns {dotted params.yaml key: value}.

    `model.afe.layers` is an integer (`suggest_int(low, high, step)`), `model.afe.kernel` a categorical over the
    listed kernels, `loss.triplet_weight` a float (log-uniform when `log`).
    """
    values: dict[str, Any] = {}
    for name in space_params(space):
        if name == "afe_layers":
            r = ranges.afe_layers
            values[DOTTED[name]] = trial.suggest_int(name, r.low, r.high, step=r.step)
        elif name == "afe_kernel":
            values[DOTTED[name]] = trial.suggest_categorical(name, list(ranges.afe_kernel))
        else:
            f = ranges.triplet_weight
            values[DOTTED[name]] = trial.suggest_float(name, f.low, f.high, log=f.log)
    return values


def to_dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna parameter names -> dotted params.yaml keys (for `--set key=value`)."""
    return {DOTTED.get(name, name): value for name, value in values.items()}


def _choices(name: str, ranges: SearchRanges) -> list[Any] | None:
    """The values a discrete parameter can take, in order; None for a float (infinitely many)."""
    if name == "afe_layers":
        r = ranges.afe_layers
        return list(range(r.low, r.high + 1, r.step))
    if name == "afe_kernel":
        return list(ranges.afe_kernel)
    return None


def space_size(space: str, ranges: SearchRanges) -> int | None:
    """How many settings `space` holds (the product of its parameters' choices); None when it searches a float."""
    size = 1
    for name in space_params(space):
        choices = _choices(name, ranges)
        if choices is None:
            return None
        size *= len(choices)
    return size


def _describe(name: str, ranges: SearchRanges) -> str:
    if name == "afe_layers":
        r = ranges.afe_layers
        return f"int {r.low}..{r.high}" + (f" step {r.step}" if r.step != 1 else "")
    if name == "afe_kernel":
        return "one of " + ", ".join(str(k) for k in ranges.afe_kernel)
    f = ranges.triplet_weight
    return f"float {f.low:g}..{f.high:g}" + (" log" if f.log else "")


def searched_space(space: str, ranges: SearchRanges) -> dict[str, str]:
    """{dotted params.yaml key: `search: <range>`} for the parameters `space` samples, e.g. `model.afe.layers` =
    `search: int 1..8`, `model.afe.kernel` = `search: one of 1, 3, 5, 7`, `loss.triplet_weight` =
    `search: float 0.01..1 log`: what the study's parent run logs instead of the base value of a searched key."""
    return {DOTTED[name]: SEARCH_PREFIX + _describe(name, ranges) for name in space_params(space)}
