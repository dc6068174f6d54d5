"""A worker of a study: `sanet hpo --space NAME` runs one, and any number may run at once on one shared storage.

Workers share the trial budget (`hpo.trials`, all workers together): a worker starts no trial once the study holds
that many, whichever worker ran them, so a late worker may start none. Each worker samples with its own seeded
sampler (`hpo.seed + worker`): Optuna's brute-force sampler for a finite space, TPE with the constant liar for one
with a float, so that workers running at the same time do not all try the same point. A setting that a COMPLETE
trial holds is never trained again, and a finite space ends when every setting was tried (`sanet.hpo.search`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sanet.hpo.errors import HPOError
from sanet.hpo.spaces import check_space, check_variant

if TYPE_CHECKING:
    import optuna

    from sanet.config import Params

__all__ = ["WorkerResult", "run_worker"]


@dataclass(frozen=True)
class WorkerResult:
    """What one worker did: trials it trained, by outcome (the study may hold more, run by other workers), and the
    duplicates it skipped (sampled settings of a COMPLETE trial: not trained, not in `trials_run`)."""

    study: str
    trials_run: int
    completed: int
    pruned: int
    failed: int
    duplicates: int = 0

    @property
    def name(self) -> str:
        """The study's name (as `StudyInfo.name` and `SummaryResult.name`)."""
        return self.study


def refuse_distributed() -> None:
    """Trials are single-process trainings: under torchrun every rank would run its own study. Refuse it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    if world > 1:
        raise HPOError(
            f"sanet hpo runs single-process trials but WORLD_SIZE is {world} (torchrun): start workers as separate "
            "processes instead (each `sanet hpo --space NAME --worker N`, sharing the storage)"
        )


def check_holdout(params: Params) -> None:
    """hpo.val_ids identities can be held out of data.train's training split (before any trial trains)."""
    from sanet.data.benchmarks import build_benchmark
    from sanet.data.holdout import holdout_split

    benchmark = build_benchmark(params.data.train, params.data.root)
    try:
        holdout_split(benchmark, params.hpo.val_ids, params.seed)
    except ValueError as exc:
        raise HPOError(f"hpo.val_ids ({params.hpo.val_ids}): {exc}; lower hpo.val_ids") from None


def _pruner(params: Params) -> optuna.pruners.BasePruner:
    """The median pruner; `warmup_epochs` epochs are never pruned (steps are epochs, counted from 1)."""
    import optuna

    pruning = params.hpo.pruning
    if not pruning.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=pruning.startup_trials, n_warmup_steps=pruning.warmup_epochs + 1
    )


def run_worker(
    params: Params,
    space: str,
    worker: int = 0,
    trials: int | None = None,
    progress: bool = True,
    device: str = "auto",
) -> WorkerResult:
    """Run trials of the study of `space` until it holds `trials` (default hpo.trials) trials, its finite space is
    exhausted or hpo.timeout passes (duplicates of a COMPLETE trial are not trained and not counted).

    Before any training: the space, the process (not under torchrun), the tracking store, the storage and the
    held-out split are checked, and the study is created if needed (`create_study`). Trials that fail with a
    TrainingError (a diverging loss) are recorded as FAIL and the worker goes on; any other error stops it.

    Raises:
        HPOError, TrackingError, ConfigError, BenchmarkError: before any training.
    """
    import optuna

    from sanet.hpo.search import TrialBudget, counted, exhausted, make_sampler
    from sanet.hpo.study import ensure_study, preflight
    from sanet.hpo.study_storage import open_storage, storage_url
    from sanet.hpo.trial import TrialObjective
    from sanet.train.errors import TrainingError

    check_space(space)
    check_variant(space, params.model.variant)
    refuse_distributed()
    if worker < 0:
        raise HPOError(f"worker must be 0 or more, got {worker}")
    total = params.hpo.trials if trials is None else trials
    if total < 1:
        raise HPOError(f"trials must be at least 1, got {total}")
    preflight(params, space)
    check_holdout(params)
    storage = open_storage(storage_url(params))
    info = ensure_study(params, space, storage)
    study = optuna.load_study(
        study_name=info.name,
        storage=storage,
        sampler=make_sampler(params, space, worker, total),
        pruner=_pruner(params),
    )
    existing = study.get_trials(deepcopy=False)
    held = counted(existing)
    print(f"sanet hpo: study {info.name} in {info.storage}, worker {worker}: {held} of {total} trials so far")
    objective = TrialObjective(params, space, info, worker=worker, progress=progress, device=device)
    if exhausted(params, space, existing):
        print(f"sanet hpo: every setting of the space {space} has been tried: no trial to run")
    elif held < total:
        study.optimize(
            objective,
            timeout=params.hpo.timeout or None,
            callbacks=[TrialBudget(params, space, total)],
            catch=(TrainingError,),
            gc_after_trial=True,
        )
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    ran = [states.get(n) for n in objective.numbers if n not in objective.duplicates]
    return WorkerResult(
        study=info.name,
        trials_run=len(ran),
        completed=ran.count(optuna.trial.TrialState.COMPLETE),
        pruned=ran.count(optuna.trial.TrialState.PRUNED),
        failed=ran.count(optuna.trial.TrialState.FAIL),
        duplicates=len(objective.duplicates),
    )
