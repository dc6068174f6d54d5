"""MLflow for every stage: where runs go, a fast pre-flight check, run naming and tags, params and batched metrics.

Conventions (DESIGN section 6): one experiment per pipeline purpose; params under their dotted `params.yaml` keys
(`model.afe.layers`: the names `--set` and `dvc exp run -S` take; issue 18 replaced DESIGN's short names); metrics
`<benchmark>/rank1`, `<benchmark>/mAP`; tags `git_sha` (with MLflow's `mlflow.source.git.commit`), `data_md5`,
`variant`, `stage`, `profile` and, inside a pipeline, `pipeline_run` (from `SANET_PIPELINE_RUN`). Under DDP only
rank 0 calls this module.

MLflow 3 refuses the plain file store, so the tracking URI is a database (`sqlite:///mlflow.db` locally, the default)
or a tracking server (`http(s)://...` on the cluster). With a sqlite store, artifacts go to `./mlruns` under the
working directory of the process that created the experiment (MLflow's default artifact root); a tracking server
decides its own artifact store (S3 on the cluster).

`mlflow` itself is imported inside the functions that need it, so that `flat_params`, `run_tags` and friends stay
cheap to import (Kubeflow components, the CLI's start-up).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sanet.infra.envvars import temporary_env
from sanet.infra.errors import SanetError
from sanet.infra.preflight import check_database_url, check_sqlite_url, redact, with_deadline

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient
    from mlflow.entities import Metric

    from sanet.config import Params

__all__ = [
    "DEFAULT_TRACKING_URI",
    "PARAM_SECTIONS",
    "PIPELINE_OUTPUT_PATHS",
    "PIPELINE_RUN_ENV",
    "MetricLogger",
    "TrackingError",
    "check_tracking_uri",
    "flat_params",
    "git_sha",
    "log_file",
    "model_label",
    "pipeline_run_id",
    "run_tags",
    "source_tags",
    "start_run",
    "tracking_uri",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PIPELINE_RUN_ENV = "SANET_PIPELINE_RUN"
"""Environment variable naming one pipeline execution; its value becomes the `pipeline_run` tag of every run."""

PARAM_SECTIONS: tuple[str, ...] = (
    "profile",
    "seed",
    "data",
    "input",
    "model",
    "loss",
    "train",
    "augment",
    "evaluation",
    "masks",
)
"""Sections of `Params` logged as MLflow params (not synth, tracking, profiles: they do not change a result)."""

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's UI opens an experiment of this kind in its model-training view (runs, metrics, charts), not the GenAI
one (traces, evaluations) it guesses for an untagged experiment."""

_MAX_PARAM_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH, without importing mlflow
_MAX_TAG_LENGTH = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH
_MAX_METRICS_PER_BATCH = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH
_MAX_PARAMS_PER_BATCH = 100  # mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH (the schema logs 100 today)
_BARE_SCHEMES = ("databricks", "databricks-uc", "uc")


class TrackingError(SanetError, RuntimeError):
    """The tracking store cannot be used; the message names the URI and the reason, for a terminal."""


# ---- where runs go ---------------------------------------------------------------------------------------------


def tracking_uri(params: Params) -> str:
    """The tracking URI a run uses: `MLFLOW_TRACKING_URI` when set and non-empty, else `tracking.uri`."""
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or params.tracking.uri


def _check_http(uri: str, timeout: float) -> None:
    import requests

    url = uri.rstrip("/") + "/health"  # MLflow's server answers /health without authentication
    auth: Any = None
    headers: dict[str, str] = {}
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    elif (user := os.environ.get("MLFLOW_TRACKING_USERNAME")) is not None:
        auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
        verify = False
    try:
        response = requests.get(url, timeout=timeout, auth=auth, headers=headers, verify=verify)
    except requests.Timeout:
        raise TrackingError(f"tracking server {redact(uri)} is unreachable: no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.exceptions.SSLError):  # before ConnectionError, its base class
            reason = "TLS error (set MLFLOW_TRACKING_SERVER_CERT_PATH or MLFLOW_TRACKING_INSECURE_TLS)"
        elif isinstance(exc, requests.ConnectionError):
            reason = "connection refused or host not found"
        raise TrackingError(f"tracking server {redact(uri)} is unreachable: {reason}") from None
    if not 200 <= response.status_code < 300:
        raise TrackingError(
            f"tracking server {redact(uri)} is unreachable: GET /health answered HTTP {response.status_code}"
        )


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Pre-flight: make sure the tracking store answers, before any training, within about `timeout` seconds.

    MLflow's own client retries for minutes before it gives up on an unreachable server, long after the data was
    read and the model built; this check fails in seconds instead. What it checks:

    - `http(s)://`: GET `<uri>/health` (MLflow's credentials from the environment are sent); connection errors,
      timeouts and non-2xx answers fail.
    - `sqlite:///path`: the folder exists or can be created (it is created) and is writable; an existing file is
      a SQLite database that can be opened for writing.
    - other SQLAlchemy URLs (`postgresql://`, `mysql://`, `mssql://`): a connection with a connect timeout and
      `SELECT 1`; a missing DB-API driver is named with the package to install.
    - `file:` URIs and bare paths fail: MLflow 3 needs a database or a server.
    - `databricks` and other schemes are left to MLflow.

    Raises:
        TrackingError: the store cannot be used; the message names the URI (password hidden) and the reason.
    """
    uri = uri.strip()
    if uri in _BARE_SCHEMES:  # `databricks`, `databricks-uc`: MLflow's own business
        return
    scheme = urlsplit(uri).scheme.lower() if "://" in uri or uri.startswith("file:") else ""
    if scheme in ("", "file") or len(scheme) == 1:  # a bare path, a file: URI, or a Windows drive letter
        raise TrackingError(
            f"tracking URI {uri!r} is a plain folder; MLflow 3 needs a database or a tracking server: "
            f"use {DEFAULT_TRACKING_URI} (set tracking.uri or MLFLOW_TRACKING_URI)"
        )
    backend = scheme.split("+")[0]
    if scheme in ("http", "https"):
        with_deadline(lambda: _check_http(uri, timeout), timeout, uri, "tracking store", TrackingError)
    elif backend == "sqlite":
        check_sqlite_url(uri, "tracking store", TrackingError)
    elif backend in ("postgresql", "mysql", "mssql"):
        with_deadline(
            lambda: check_database_url(uri, timeout, "tracking store", TrackingError),
            timeout,
            uri,
            "tracking store",
            TrackingError,
        )
    elif backend == "postgres":
        raise TrackingError(f"tracking URI {redact(uri)}: write postgresql://, MLflow does not know postgres://")


# ---- what a run records ----------------------------------------------------------------------------------------


def _param_value(value: Any) -> str | int | float | bool:
    if isinstance(value, bool | int | float | str):
        text = value
    elif value is None:
        text = "None"
    else:  # lists (and anything else): JSON, so "[60, 120]" reads back as a list
        text = json.dumps(value)
    if isinstance(text, str) and len(text) > _MAX_PARAM_LENGTH:
        text = text[: _MAX_PARAM_LENGTH - 3] + "..."
    return text


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def flat_params(params: Params) -> dict[str, str | int | float | bool]:
    """The parameters as MLflow params, named by their dotted `params.yaml` keys, in a fixed order.

    The names are the ones users type: `model.afe.layers`, `loss.triplet_weight`, `train.lr`, the keys of
    `--set`, `dvc exp run -S` and `dvc exp show`, so one name finds a setting in all three. Top-level values
    (`profile`, `seed`) keep their own name. Lists become JSON strings; values are cut to MLflow's 6000 characters.
    """
    tree = params.model_dump(mode="json", include=set(PARAM_SECTIONS))
    ordered = {name: tree[name] for name in PARAM_SECTIONS if name in tree}
    return {".".join(path): _param_value(value) for path, value in _leaves(ordered)}


PIPELINE_OUTPUT_PATHS: tuple[str, ...] = ("dvc.lock", "reports", "outputs")
"""What `dvc repro` writes inside the repository: DVC records these in `dvc.lock`, so they do not make a run dirty."""


def git_sha(path: str | Path = ".") -> str:
    """The full sha of HEAD of the repository holding `path`, `-dirty` when tracked files have uncommitted changes.

    The pipeline's own outputs (`PIPELINE_OUTPUT_PATHS`: `dvc.lock`, `reports/`, `outputs/`) do not count: `dvc
    repro` removes a stage's committed outputs (metrics, CMC, the registry record) before it runs the stage and
    rewrites `dvc.lock` after it, so every later stage would otherwise tag its run dirty although the code,
    parameters and data are the commit's; whether those outputs match the commit is what `dvc status` answers.
    "unknown" outside a git repository, without git, or when git refuses (e.g. a repository owned by another user).
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    excluded = [f":(top,exclude){name}" for name in PIPELINE_OUTPUT_PATHS]
    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", *excluded)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def source_tags(sha: str) -> dict[str, str]:
    """MLflow's own source tags for a `git_sha` value: `mlflow.source.git.commit` (the clean sha, when known),
    `mlflow.source.name` and `mlflow.source.type`, so that the UI's source column and git link work; `git_dirty`
    says whether the working tree differed from that commit."""
    tags = {"mlflow.source.name": "sanet", "mlflow.source.type": "LOCAL"}
    if sha != "unknown":
        tags["mlflow.source.git.commit"] = sha.removesuffix("-dirty")
        tags["git_dirty"] = str(sha.endswith("-dirty")).lower()
    return tags


def pipeline_run_id(inherited: str | None = None) -> str:
    """The `pipeline_run` tag of a stage's run: `SANET_PIPELINE_RUN` when set, else `inherited`, else a new id.

    `make demo` sets the variable for a whole `dvc repro`. Without it, training starts a new id (UTC time and a
    random suffix, `20261125-104500-3f9a1c`) and stores it in the model file, and the stages that use the model
    inherit it: the runs of one pipeline execution share the tag and can be filtered together in the MLflow UI.
    """
    if value := os.environ.get(PIPELINE_RUN_ENV, "").strip():
        return value
    if inherited:
        return inherited
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def model_label(params: Params) -> str:
    """The model in a run name: the variant, with the AFE's layers and kernel where it has an AFE (`sanet L5 k3`).

    Ablation runs differ by exactly these settings, so the runs table tells them apart at a glance.
    """
    model = params.model
    if model.variant in ("fixed_fe", "sanet"):
        return f"{model.variant} L{model.afe.layers} k{model.afe.kernel}"
    return model.variant


def run_tags(params: Params, data_md5: str, stage: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags of a stage's run: git_sha (with MLflow's `source_tags`), data_md5, variant, stage, profile,
    pipeline_run (when set), then `extra`."""
    sha = git_sha()
    tags = {
        "git_sha": sha,
        **source_tags(sha),
        "data_md5": data_md5,
        "variant": params.model.variant,
        "stage": stage,
        "profile": params.profile,
    }
    if pipeline_run := os.environ.get(PIPELINE_RUN_ENV, "").strip():
        tags["pipeline_run"] = pipeline_run
    tags.update({str(k): str(v) for k, v in (extra or {}).items()})
    return tags


# ---- the run ---------------------------------------------------------------------------------------------------


def _experiment_id(client: MlflowClient, name: str, artifact_location: str = "") -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location or None, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except MlflowException:  # created by a concurrent process in the meantime
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted: restore it with "
            f"`mlflow experiments restore --experiment-id {experiment.experiment_id}` or choose another name"
        )
    if experiment.tags.get(EXPERIMENT_KIND_TAG) is None:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _log_params(client: MlflowClient, run_id: str, params: Params, resumed: bool) -> None:
    """Log `flat_params` in batches of MLflow's 100; on a resumed run, only the missing ones (MLflow refuses changed
    values)."""
    from mlflow.entities import Param, RunTag

    values = {name: str(value) for name, value in flat_params(params).items()}
    tags: list[RunTag] = []
    if resumed:
        existing = client.get_run(run_id).data.params
        changed = [f"{k}: {existing[k]} -> {v}" for k, v in values.items() if k in existing and existing[k] != v]
        values = {k: v for k, v in values.items() if k not in existing}
        if changed:
            tags.append(RunTag("params_changed_on_resume", "; ".join(changed)[:_MAX_TAG_LENGTH]))
    if values or tags:
        logged = [Param(k, v) for k, v in values.items()]
        for start in range(0, max(len(logged), 1), _MAX_PARAMS_PER_BATCH):
            batch_tags = tags if start == 0 else []
            client.log_batch(run_id, params=logged[start : start + _MAX_PARAMS_PER_BATCH], tags=batch_tags)


def _end(run_id: str, status: str) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    elif mlflow.MlflowClient().get_run(run_id).info.status == "RUNNING":  # ended elsewhere: only fix its status
        mlflow.MlflowClient().set_terminated(run_id, status)


@contextlib.contextmanager
def start_run(
    params: Params,
    *,
    stage: str,
    run_name: str,
    tags: Mapping[str, str],
    experiment: str | None = None,
    nested: bool = False,
    run_id: str | None = None,
) -> Iterator[ActiveRun]:
    """Open an MLflow run for a stage and yield the `ActiveRun`; the run ends when the block does.

    Sets the tracking URI (`tracking_uri`), creates or uses the experiment (`tracking.experiment` unless
    `experiment` is given), starts the run with `tags` (and `stage`), system metrics (CPU, memory, disk, network;
    GPU with pynvml) every `tracking.system_metrics_interval` s when `tracking.system_metrics`, and logs
    `flat_params(params)` in one batch. `run_id` resumes an existing run (a resumed training): its tags are updated
    and only params it lacks are logged (MLflow refuses to change a logged param; differences go to the tag
    `params_changed_on_resume`).

    The run ends FINISHED when the block completes (or raises SystemExit(0)), KILLED on KeyboardInterrupt or a
    non-zero SystemExit, FAILED on any other exception (which propagates).
    """
    import mlflow

    uri = tracking_uri(params)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which would then override `tracking.uri` for every
    # later run of this process: export it for the run only (nested runs and subprocesses inherit the store).
    with temporary_env("MLFLOW_TRACKING_URI", uri):
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        experiment_id = (
            None
            if run_id
            else _experiment_id(client, experiment or params.tracking.experiment, params.tracking.artifact_location)
        )
        # MLflow reads the sampling interval from the environment when the monitor starts: set for this run only.
        with temporary_env("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", str(params.tracking.system_metrics_interval)):
            run = mlflow.start_run(
                run_id=run_id,
                experiment_id=experiment_id,
                run_name=run_name,
                nested=nested,
                tags={**{str(k): str(v) for k, v in tags.items()}, "stage": stage},
                log_system_metrics=params.tracking.system_metrics,
            )
        with _ends(run.info.run_id):
            _log_params(client, run.info.run_id, params, resumed=run_id is not None)
            yield run


@contextlib.contextmanager
def _ends(run_id: str) -> Iterator[None]:
    """End the run when the block does, with the status its outcome calls for (see `start_run`)."""
    try:
        yield
    except KeyboardInterrupt:
        _end(run_id, "KILLED")
        raise
    except SystemExit as exc:
        _end(run_id, "FINISHED" if exc.code in (None, 0) else "KILLED")
        raise
    except BaseException:
        _end(run_id, "FAILED")
        raise
    else:
        _end(run_id, "FINISHED")


class MetricLogger:
    """Batches per-step metrics into `MlflowClient.log_batch` calls: cheap enough to call every step.

    `log` only appends to a buffer; the buffer goes to MLflow when it holds `flush_every` values, when
    `max_delay` seconds passed since the last flush (so the UI follows a long epoch), and on `flush()` / `close()`.
    Metric names may contain `/` (`train/loss`, `market1501/mAP`). Logs to `run_id`, by default the active run.
    """

    def __init__(self, run_id: str | None = None, flush_every: int = 200, max_delay: float = 30.0) -> None:
        import mlflow

        if run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise TrackingError("MetricLogger needs an active MLflow run or a run_id")
            run_id = active.info.run_id
        if flush_every < 1:
            raise ValueError(f"flush_every must be positive, got {flush_every}")
        self.run_id = run_id
        self.flush_every = flush_every
        self.max_delay = max_delay
        self._client = mlflow.MlflowClient()
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer `metrics` at `step` (timestamped now); flush when the buffer is full or old."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self._buffer.extend(Metric(str(k), float(v), timestamp, int(step)) for k, v in metrics.items())
        if len(self._buffer) >= self.flush_every or time.monotonic() - self._last_flush >= self.max_delay:
            self.flush()

    def flush(self) -> None:
        """Send every buffered value to MLflow (at most 1000 per request)."""
        buffer, self._buffer = self._buffer, []
        for start in range(0, len(buffer), _MAX_METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=buffer[start : start + _MAX_METRICS_PER_BATCH])
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush what is left; the logger can still be used afterwards."""
        self.flush()

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_file(path: str | Path, artifact_path: str | None = None) -> None:
    """Log one file as an artifact of the active run (under `artifact_path`), with a clear error when it is missing."""
    import mlflow

    path = Path(path)
    if not path.is_file():
        raise TrackingError(f"cannot log {path} to MLflow: no such file")
    mlflow.log_artifact(str(path), artifact_path=artifact_path)
