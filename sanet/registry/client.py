"""The MLflow side of the registry: an explicit client, the version tags this project writes and reads back.

Every registry command talks to MLflow through `MlflowClient(uri, registry_uri=uri)`. Two parts of MLflow still read
the process-wide tracking URI (the fluent run API, and the SQL registry store resolving a `models:/<model_id>`
source), so the commands run inside `global_tracking_uri(uri)`, which sets it for the block and puts back exactly
what was there before (module state and environment), so that nothing leaks into the caller's process.

Version tags are few, so the registry's versions table reads at a glance (issue 18): the gate's `gate`, `gate_reason`
and `gate_champion_version`, `git_sha`, `data_md5` (the training data), `model_md5`, `register_run_id`, and the
headline `mean_rank1_holistic` / `mean_rank1_partial`. The full results live on the register run the version names
(`register_run_id`): metrics `<benchmark>/<metric>` (fractions, as in metrics.json, also linked to the logged
model), tags `<benchmark>/data_md5` (the test set), the gate's tolerances and deltas, and the params. Versions
registered before that change carry the full results as their own tags; `version_results` reads both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sanet.infra.preflight import redact
from sanet.registry.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel, Run
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "REGISTER_RUN_TAG",
    "aliases",
    "all_versions",
    "ensure_registered_model",
    "find_logged_model",
    "find_run",
    "find_training_run",
    "global_tracking_uri",
    "mlflow_errors",
    "no_model_error",
    "registered_model",
    "registry_client",
    "version_results",
]

CANDIDATE = "candidate"
CHAMPION = "champion"
REGISTER_RUN_TAG = "register_run_id"
"""The version tag naming the register run that holds the version's full results."""
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")
_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_NOT_BENCHMARKS = ("params", "gate")


def registry_client(uri: str) -> MlflowClient:
    """A client whose tracking and registry URIs are both `uri` (never MLflow's process-wide default)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Make `uri` MLflow's process-wide tracking URI for the block; restore the previous state afterwards.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI; both the module state and the environment
    variables (tracking and registry) are put back as they were, even when the block raises.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_tracking = tracking_utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    saved_env = {name: os.environ.get(name) for name in _URI_VARIABLES}
    try:
        mlflow.set_tracking_uri(uri)
        registry_utils._registry_uri = None  # the registry follows the tracking URI
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
        yield
    finally:
        if tracking_utils._tracking_uri != saved_tracking:
            mlflow.set_tracking_uri(saved_tracking)  # also resets MLflow's tracer provider
        registry_utils._registry_uri = saved_registry
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in _NOT_FOUND


@contextlib.contextmanager
def mlflow_errors(uri: str, what: str) -> Iterator[None]:
    """Turn an MLflow error inside the block into a RegistryError naming the store and what was being done."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        text = str(getattr(exc, "message", None) or exc).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
        raise RegistryError(f"{what} failed at {redact(uri)}: {message}") from exc


def no_model_error(name: str, uri: str) -> RegistryError:
    """The error for a registry without the model `name`: where it looked and how to create the model."""
    return RegistryError(
        f"no registered model {name!r} in {redact(uri)}: run `dvc repro` (stage register) or `sanet register`"
    )


def registered_model(client: MlflowClient, name: str) -> RegisteredModel | None:
    """The registered model `name`, or None when the registry has none of that name."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise


def ensure_registered_model(client: MlflowClient, name: str, description: str) -> None:
    """Create the registered model `name` unless it exists (a concurrent creation is fine too)."""
    from mlflow.exceptions import MlflowException

    if registered_model(client, name) is not None:
        return
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def aliases(client: MlflowClient, name: str) -> dict[str, int]:
    """`{alias: version}` of the registered model `name` (empty when it does not exist), sorted by alias."""
    model = registered_model(client, name)
    if model is None:
        return {}
    return {alias: int(version) for alias, version in sorted(model.aliases.items())}


def all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of the registered model `name`, newest first (all pages)."""
    found: list[ModelVersion] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            break
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def find_run(client: MlflowClient, run_id: str | None) -> Run | None:
    """The run `run_id` in this tracking store, or None (no id, or a run of another store)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise


def find_training_run(client: MlflowClient, model_md5: str, *run_ids: str | None) -> Run | None:
    """The training run of the model file with `model_md5`: the first of `run_ids` this store has (the training's
    sidecar names its run), else the newest FINISHED run tagged `stage=train` and `model_md5` (the model file
    itself names no run: it is a DVC output), preferring one that logged the model; None when there is none."""
    for run_id in run_ids:
        if (run := find_run(client, run_id)) is not None:
            return run
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments or not model_md5:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.model_md5 = '{model_md5}' and tags.stage = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    return next((run for run in runs if find_logged_model(client, run) is not None), runs[0] if runs else None)


def find_logged_model(client: MlflowClient, run: Run) -> LoggedModel | None:
    """The finished model logged by `run` (the newest when it logged several), or None when it logged none."""
    from mlflow.entities import LoggedModelStatus

    found: list[LoggedModel] = []
    token: str | None = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            page_token=token,
        )
        found.extend(model for model in page if model.status == LoggedModelStatus.READY)
        token = page.token
        if not token:
            break
    if not found:
        return None
    return max(found, key=lambda model: (model.creation_timestamp or 0, model.model_id))


def _results(
    values: Mapping[str, str | float], md5s: Mapping[str, str]
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Parse `<benchmark>/<metric>` values and `<benchmark>/data_md5` entries; non-numbers are skipped."""
    metrics: dict[str, dict[str, float]] = {}
    data: dict[str, str] = {}
    for key, value in [*values.items(), *md5s.items()]:
        benchmark, slash, name = key.partition("/")
        if not slash or "/" in name or benchmark in _NOT_BENCHMARKS or not benchmark:
            continue
        if name == "data_md5":
            data[benchmark] = str(value)
            continue
        try:
            metrics.setdefault(benchmark, {})[name] = float(value)
        except ValueError:
            continue
    return metrics, data


def version_results(client: MlflowClient, version: ModelVersion) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """A version's results: (`{benchmark: {metric: value}}`, `{benchmark: test-set md5}`).

    Read from the register run the version names (`register_run_id`); a version registered before the results
    moved there carries them as its own tags. A tag or metric that is not a number is skipped: a hand-edited value
    must not break the gate of every later version.
    """
    tags = dict(version.tags)
    run = find_run(client, tags.get(REGISTER_RUN_TAG)) if REGISTER_RUN_TAG in tags else None
    if run is None or not run.data.metrics:
        return _results(tags, {})
    metrics = {key: value for key, value in run.data.metrics.items() if not key.startswith("gate/")}
    return _results(metrics, {key: value for key, value in run.data.tags.items() if key.endswith("/data_md5")})


def tag_value(value: Any) -> str:
    """A tag's text: numbers as Python writes them (they read back exactly), None as ''."""
    return "" if value is None else str(value)
