"""Creating a study and its MLflow parent run, exactly once however many workers start at the same moment.

`create_study` is what every worker does first (and what a Kubeflow pipeline's first step does alone): pre-flight
the tracking store and the storage, then create the study. Optuna's own `create_study(load_if_exists=False)`
decides which process is the creator (the others get DuplicatedStudyError); only the creator opens the MLflow
parent run and publishes its id as the study's user attribute `mlflow_parent_run_id`. The others wait for the
attribute, and open the parent run themselves only when it never appears (its creator died in between).

The parent run's params are the base trial settings under their dotted `params.yaml` keys, except that a searched
key holds its search range instead of the base value no trial uses (`model.afe.layers` = `search: int 1..8`,
`sanet.hpo.spaces.searched_space`); its trials, nested under it, hold their sampled values under the same keys.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sanet.hpo.errors import HPOError
from sanet.hpo.settings import study_name, trial_params
from sanet.hpo.spaces import check_space, check_variant, searched_space
from sanet.hpo.study_storage import check_storage, open_storage, storage_url
from sanet.infra.preflight import redact

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

    from sanet.config import Params

__all__ = ["PARENT_ATTR", "PARENT_WAIT", "StudyInfo", "create_study", "parent_params"]

PARENT_ATTR = "mlflow_parent_run_id"
PARENT_WAIT = 60.0  # seconds a worker waits for the creator of a study to publish its parent run
_POLL = 0.5


@dataclass(frozen=True)
class StudyInfo:
    """A study ready for trials: its name, storage (password hidden), space, MLflow parent run and experiment."""

    name: str
    storage: str
    space: str
    parent_run_id: str
    experiment: str
    created: bool = False  # this call created the study


def preflight(params: Params, space: str) -> None:
    """Everything a study needs before any work: a known space that fits the model, the tracking store, the storage.

    Raises:
        HPOError: unknown space, AFE space without an AFE, unusable storage.
        TrackingError: the tracking store does not answer.
    """
    from sanet.infra.tracking import check_tracking_uri, tracking_uri

    check_space(space)
    check_variant(space, params.model.variant)
    check_tracking_uri(tracking_uri(params))
    check_storage(storage_url(params))


def mlflow_client(params: Params) -> MlflowClient:
    """A client of the tracking store the parameters name (`MLFLOW_TRACKING_URI` wins), without global state."""
    from mlflow import MlflowClient

    from sanet.infra.tracking import tracking_uri

    return MlflowClient(tracking_uri(params))


def parent_params(params: Params, space: str) -> dict[str, str]:
    """The parent run's params: the base trial settings by dotted key, a searched key its range (module docstring)."""
    from sanet.infra.tracking import flat_params

    searched = searched_space(space, params.hpo.ranges)
    flat = {key: str(value) for key, value in flat_params(trial_params(params, {})).items()}
    return {key: searched.get(key, value) for key, value in flat.items()} | searched


def create_parent_run(params: Params, space: str, name: str) -> str:
    """Open the study's MLflow parent run (left RUNNING until a summary finishes it); returns its id."""
    from mlflow.entities import Param

    from sanet.infra.tracking import _experiment_id, git_sha, source_tags

    client = mlflow_client(params)
    experiment_id = _experiment_id(client, params.hpo.experiment, params.tracking.artifact_location)
    sha = git_sha()
    tags = {
        "stage": "hpo",
        "hpo_space": space,
        "optuna_study": name,
        "optuna_storage": redact(storage_url(params)),
        "profile": params.profile,
        "git_sha": sha,
        **source_tags(sha),
    }
    run = client.create_run(experiment_id, run_name=f"study {name}", tags=tags)
    flat = [Param(key, value) for key, value in parent_params(params, space).items()]
    for start in range(0, len(flat), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=flat[start : start + 100])
    return run.info.run_id


def _parent_exists(params: Params, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client(params).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise  # the store failed: do not create a second parent run
    return run.info.lifecycle_stage != "deleted"


def _publish_parent(params: Params, space: str, study: optuna.Study) -> str:
    run_id = create_parent_run(params, space, study.study_name)
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def _wait_for_parent(study: optuna.Study, storage: optuna.storages.BaseStorage) -> str | None:
    deadline = time.monotonic() + PARENT_WAIT
    study_id = storage.get_study_id_from_name(study.study_name)
    while True:
        attrs: dict[str, Any] = storage.get_study_user_attrs(study_id)
        if attrs.get(PARENT_ATTR):
            return str(attrs[PARENT_ATTR])
        if time.monotonic() >= deadline:
            return None
        time.sleep(_POLL)


def ensure_study(params: Params, space: str, storage: optuna.storages.BaseStorage) -> StudyInfo:
    """Create the study of `space` in `storage` unless it exists, with its parent run (module docstring); no checks."""
    import optuna

    from sanet.infra.tracking import git_sha

    name = study_name(params, space)
    shown = redact(storage_url(params))
    created = False
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=False)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    if created:
        study.set_user_attr("space", space)
        study.set_user_attr("base_params", base_params_json(params))
        study.set_user_attr("git_sha", git_sha())
        parent = _publish_parent(params, space, study)
    else:
        found = _wait_for_parent(study, storage)
        if found is None:
            print(f"sanet hpo: study {name} has no MLflow parent run after {PARENT_WAIT:g} s; creating it")
            parent = _publish_parent(params, space, study)
        elif not _parent_exists(params, found):  # e.g. a new tracking store for an old study
            print(f"sanet hpo: the parent run {found} of study {name} is not in the tracking store; creating a new one")
            parent = _publish_parent(params, space, study)
        else:
            parent = found
    return StudyInfo(
        name=name, storage=shown, space=space, parent_run_id=parent, experiment=params.hpo.experiment, created=created
    )


def create_study(params: Params, space: str) -> StudyInfo:
    """Pre-flight the tracking store and the storage, then create the study of `space` if it does not exist.

    Safe to call from many processes at once (module docstring): exactly one creates the study and its MLflow
    parent run (experiment hpo.experiment, run name `study <name>`, tags stage=hpo, hpo_space, optuna_study,
    optuna_storage, profile, git_sha; params: the base trial parameters, each searched key its range: module
    docstring), the others load it.

    Raises:
        HPOError, TrackingError: before anything is created (see `preflight`).
    """
    preflight(params, space)
    return ensure_study(params, space, open_storage(storage_url(params)))


def load_existing(params: Params, space: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Load the study of `space`; HPOError naming the study and the storage when it does not exist."""
    import optuna

    name = study_name(params, space)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise HPOError(
            f"study {name} not found in the Optuna storage {redact(storage_url(params))}: run "
            f"`sanet hpo --space {space}` first, with the same parameters (the name hashes the trial settings)"
        ) from None


def parent_run_of(params: Params, space: str, study: optuna.Study) -> str:
    """The study's parent run id; a missing or vanished parent is created anew (its creator died, a new store)."""
    found = study.user_attrs.get(PARENT_ATTR)
    if found and _parent_exists(params, str(found)):
        return str(found)
    return _publish_parent(params, space, study)


def base_params_json(params: Params) -> str:
    """The base trial parameters as JSON (what the study records about its settings)."""
    return json.dumps(trial_params(params, {}).model_dump(mode="json", exclude={"profiles"}), sort_keys=True)
