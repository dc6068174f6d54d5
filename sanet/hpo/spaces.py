"""The search spaces of `sanet hpo --space NAME`: which parameters each samples, and how (params.yaml `hpo.ranges`).

Optuna names a parameter by its flat MLflow name (`afe_layers`, DESIGN section 6); the trial's settings use the
dotted path of `params.yaml` (`model.afe.layers`), ready for `--set`. optuna is not imported here: `suggest` only
calls the trial object it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sanet.contracts.studies import SPACES
from sanet.hpo.errors import HPOError

if TYPE_CHECKING:
    import optuna

    from sanet.config import SearchRanges

__all__ = ["DOTTED", "SPACES", "check_space", "space_params", "suggest", "to_dotted"]


DOTTED: Mapping[str, str] = {
    "afe_layers": "model.afe.layers",
    "afe_kernel": "model.afe.kernel",
    "triplet_weight": "loss.triplet_weight",
}
"""Optuna (and MLflow) parameter name -> dotted key of params.yaml."""

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
