"""How a study spends its trial budget: the sampler, no second training of a setting, the end of a finite space.

A trial is a training of minutes to hours, so a study never trains a setting that a COMPLETE trial already holds:

- **Finite spaces** (only integers and categoricals: `afe_layers`, `afe_kernel`; `sanet.hpo.spaces.space_size`) are
  sampled by Optuna's `BruteForceSampler`, seeded with `hpo.seed + worker`: it proposes only settings that no trial
  of the study holds yet (finished or running, whichever worker ran it), in a seeded random order, and stops the
  study once every setting was tried. TPE models the scores of a few trials, but re-proposes the same values of a
  small discrete space (in the demo: afe_layers 5 twice, with the same score).
- **Spaces with a float** (`triplet_weight`, `joint`) keep the seeded TPE sampler with the constant liar.
- **Duplicates.** Whatever the sampler, a trial whose sampled parameters equal those of a COMPLETE trial is not
  trained (`check_duplicate`): it is PRUNED at once with the user attribute `duplicate_of` (that trial's number),
  has no MLflow run and does not count toward `hpo.trials` (`TrialBudget`). With two workers starting at the same
  instant, both may still train one setting that neither has finished: the check is against COMPLETE trials.
- **The budget.** `hpo.trials` counts the study's trials of every state but duplicates, whichever worker ran them
  (`counted`). A finite space smaller than that ends when every setting has a finished trial (`exhausted`): a worker
  starts no trial then, and the summary says so (`search_report`).

Deterministic: the same seed and the same study give the same proposals; a resumed study continues where it ended.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sanet.hpo.spaces import space_params, space_size

if TYPE_CHECKING:
    import optuna

    from sanet.config import Params

__all__ = [
    "DUPLICATE_ATTR",
    "DUPLICATE_STREAK",
    "TPE_STARTUP_TRIALS",
    "TrialBudget",
    "check_duplicate",
    "counted",
    "duplicate_of",
    "exhausted",
    "is_duplicate",
    "make_sampler",
    "sampler_name",
    "search_report",
    "settings_tried",
    "startup_trials",
]

DUPLICATE_ATTR = "duplicate_of"  # trial user attribute: the COMPLETE trial whose parameters it sampled again
DUPLICATE_STREAK = 20  # duplicates in a row after which a worker stops (a sampler that proposes nothing new)
TPE_STARTUP_TRIALS = 10  # TPE's own default number of random trials before it models the results


def startup_trials(total: int) -> int:
    """Random trials before TPE models the results: TPE's default 10, but at most half of a small study (at least
    1), so that a study of a few trials still gets model-guided ones."""
    return max(1, min(TPE_STARTUP_TRIALS, total // 2))


def sampler_name(params: Params, space: str) -> str:
    """`BruteForceSampler` for a finite space, `TPESampler` for one with a float (module docstring)."""
    return "BruteForceSampler" if space_size(space, params.hpo.ranges) is not None else "TPESampler"


def make_sampler(params: Params, space: str, worker: int, total: int) -> optuna.samplers.BaseSampler:
    """The sampler of worker `worker` (seed `hpo.seed + worker`) in a study of `total` trials (module docstring)."""
    import optuna

    seed = params.hpo.seed + worker
    with warnings.catch_warnings():  # BruteForceSampler and constant_liar are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sampler_name(params, space) == "BruteForceSampler":
            return optuna.samplers.BruteForceSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=startup_trials(total))


def _setting(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def duplicate_of(trials: Iterable[optuna.trial.FrozenTrial], params: Mapping[str, Any], number: int) -> int | None:
    """The number of the first COMPLETE trial (other than `number`) whose parameters equal `params`, or None."""
    setting = _setting(params)
    for t in sorted(trials, key=lambda t: t.number):
        if t.number != number and t.state.name == "COMPLETE" and _setting(t.params) == setting:
            return t.number
    return None


def check_duplicate(trial: optuna.Trial) -> None:
    """Raise TrialPruned (with `duplicate_of` set) when a COMPLETE trial of the study holds `trial`'s parameters.

    Call it after every parameter is sampled and before any work: a duplicate costs no training and no MLflow run.
    """
    import optuna

    complete = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    original = duplicate_of(complete, trial.params, trial.number)
    if original is None:
        return
    trial.set_user_attr(DUPLICATE_ATTR, original)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(trial.params.items()))
    print(f"sanet hpo: trial {trial.number} sampled the settings of complete trial {original} ({shown}): not trained")
    raise optuna.TrialPruned(f"duplicate of complete trial {original}: not trained, not counted toward hpo.trials")


def is_duplicate(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial sampled a COMPLETE trial's settings and was not trained (`check_duplicate`)."""
    return DUPLICATE_ATTR in trial.user_attrs


def counted(trials: Iterable[optuna.trial.FrozenTrial]) -> int:
    """The trials that count toward `hpo.trials`: every state (running and waiting ones too), but duplicates."""
    return sum(not is_duplicate(t) for t in trials)


def settings_tried(trials: Iterable[optuna.trial.FrozenTrial]) -> int:
    """Distinct settings with a finished trial (COMPLETE, PRUNED or FAIL), duplicates left out."""
    return len({_setting(t.params) for t in trials if t.state.is_finished() and not is_duplicate(t)})


def exhausted(params: Params, space: str, trials: Iterable[optuna.trial.FrozenTrial]) -> bool:
    """Every setting of a finite `space` has a finished trial; never for a space with a float."""
    size = space_size(space, params.hpo.ranges)
    return size is not None and settings_tried(trials) >= size


class TrialBudget:
    """The `study.optimize` callback that ends a worker: the study holds `total` counted trials (`counted`), the
    space is exhausted, or the sampler proposed `DUPLICATE_STREAK` duplicates in a row."""

    def __init__(self, params: Params, space: str, total: int) -> None:
        self.params, self.space, self.total = params, space, total
        self.streak = 0  # duplicates in a row, in this worker

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.streak = self.streak + 1 if is_duplicate(trial) else 0
        trials = study.get_trials(deepcopy=False)
        if self.streak >= DUPLICATE_STREAK:
            print(f"sanet hpo: {self.streak} duplicate proposals in a row: the worker stops")
            study.stop()
        elif counted(trials) >= self.total:
            study.stop()
        elif exhausted(self.params, self.space, trials):
            print(f"sanet hpo: every setting of the space {self.space} has been tried: the study is complete")
            study.stop()


def search_report(params: Params, space: str, trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """The summary's `search`: the sampler, the space's size (null with a float), the settings tried, whether the
    space is exhausted, and the duplicate trials (numbers) that were not trained."""
    trials = sorted(trials, key=lambda t: t.number)
    return {
        "sampler": sampler_name(params, space),
        "parameters": list(space_params(space)),
        "settings": space_size(space, params.hpo.ranges),
        "settings_tried": settings_tried(trials),
        "exhausted": exhausted(params, space, trials),
        "duplicates": [t.number for t in trials if is_duplicate(t)],
    }
