"""Optuna studies over SANet's hyperparameters: `sanet hpo --space NAME` (DESIGN section 6).

One study per search space (`SPACES`: AFE layers, AFE kernel, triplet weight, and all three jointly), sampled by a
seeded TPE sampler; each trial trains a short schedule, is scored on identities held out of the training split
(never on a test benchmark) and can be stopped early by the median pruner. Every trial is an MLflow run nested
under the study's parent run, which ends up holding the best parameters and the study's plots;
`<hpo.reports_dir>/<space>.json` holds the best parameters and value.

    from sanet.hpo import run_hpo
    worker, summary = run_hpo(params, "afe_layers")   # = run_worker, then summarise_study

`create_study`, `run_worker` and `summarise_study` also work alone, in separate processes on separate machines
sharing one storage (a Kubeflow pipeline's steps). This package is cheap to import: torch, optuna and mlflow are
imported by the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sanet.hpo.errors import HPOError
from sanet.hpo.spaces import SPACES, suggest
from sanet.infra.lazy import lazy_attributes

if TYPE_CHECKING:
    from sanet.hpo.settings import study_name, trial_params
    from sanet.hpo.study import StudyInfo, create_study
    from sanet.hpo.study_storage import check_storage, open_storage, storage_url
    from sanet.hpo.summary import SummaryResult, summarise_study
    from sanet.hpo.worker import WorkerResult, run_hpo, run_worker

__all__ = [
    "SPACES",
    "HPOError",
    "StudyInfo",
    "SummaryResult",
    "WorkerResult",
    "check_storage",
    "create_study",
    "open_storage",
    "run_hpo",
    "run_worker",
    "storage_url",
    "study_name",
    "suggest",
    "summarise_study",
    "trial_params",
]

_LAZY = {
    "study_name": "settings",
    "trial_params": "settings",
    "check_storage": "storage",
    "open_storage": "storage",
    "storage_url": "storage",
    "StudyInfo": "study",
    "create_study": "study",
    "SummaryResult": "summary",
    "summarise_study": "summary",
    "WorkerResult": "worker",
    "run_hpo": "worker",
    "run_worker": "worker",
}


__getattr__ = lazy_attributes(__name__, {name: f"sanet.hpo.{module}" for name, module in _LAZY.items()})
