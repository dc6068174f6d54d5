"""`sanet register`: the evaluated model becomes a new version of the registered model, and the gate decides.

The DVC stage after `report`. In one MLflow run (stage `register`, experiment `tracking.experiment`):

1. The model: the pyfunc the training run logged (`tracking.log_model`), found by its `source_run_id`; when the
   training run logged none or lives in another tracking store, the model file is logged in this run instead.
   The version's tag `source` says which (`train_run` | `register_run`).
2. A new version of `registry.model_name`, made by `mlflow.register_model` from the logged model (so the model's
   page shows its version), with a handful of tags (`sanet.registry.client`) and alias `candidate`; the run holds
   every benchmark's metrics (linked to the logged model), the test-set md5s, the parameters and the gate's numbers.
3. The gate (`sanet.registry.gate`) against the version holding alias `champion`: `champion` moves to the new
   version when it passes (or when there is no champion yet). The decision becomes version tags, its numbers run
   tags, the run's metric `gate/passed`, and `reports/registry.json` (also logged in the run).

`reports/registry.json` (the stage's DVC output, committed) records what was registered and decided: the model's
md5 and training data, its results per benchmark, and the gate's decision with its numbers (the champion named by
its model's md5). It never depends on the history of the tracking store beyond that decision: the version number,
the aliases, the run ids and the model URI (MLflow's bookkeeping), the git sha and the pipeline run go to the version
tags and to the git-ignored sidecar `reports/registry.provenance.json` (`sanet.infra.provenance`). A fresh clone's
`make demo` (an empty mlflow.db) therefore writes the same bytes every time.

A failed gate is not an error: the version is registered, keeps `candidate`, and `sanet promote` can still make it
the champion by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sanet.registry.client import (
    CANDIDATE,
    CHAMPION,
    REGISTER_RUN_TAG,
    aliases,
    ensure_registered_model,
    find_logged_model,
    find_training_run,
    global_tracking_uri,
    mlflow_errors,
    registry_client,
    version_results,
)
from sanet.registry.errors import RegistryError
from sanet.registry.gate import GateDecision, evaluate_gate
from sanet.registry.inputs import Candidate, model_params, read_candidate
from sanet.registry.record import decision_tags, headline_tags, result_tags, write_record

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from sanet.config import Params

__all__ = ["MODEL_DESCRIPTION", "GateCheck", "RegisterResult", "check_gate", "run_register"]

MODEL_DESCRIPTION = (
    "SANet part features for partial person re-identification: uint8 RGB images (B, H, W, 3) in, "
    "features (B, 5, D) float32 and visibility (B, 5) bool out. Versions come from `sanet register`; alias "
    "`candidate` is the newest, `champion` the one that passed the promotion gate (or `sanet promote`)."
)
VERSION_GATE_TAGS = ("gate", "gate_reason", "gate_champion_version")
"""The gate's tags a version carries; its tolerances and per-benchmark deltas are on the register run."""
_SOURCE_LABELS = {"train_run": "the training run's logged model", "register_run": "a model logged by this run"}


@dataclass(frozen=True)
class RegisterResult:
    """What `run_register` did: the new version, its model's origin, the gate's decision and the champion after it."""

    model_name: str
    version: int
    source: Literal["train_run", "register_run"]
    decision: GateDecision
    champion_version: int | None
    path: Path
    run_id: str

    def summary(self) -> str:
        """One line for the terminal (the gate's reason is `decision.reason`, printed apart: it can be long)."""
        outcome = {
            "first": f"no champion yet, v{self.version} is the champion now",
            "passed": f"champion moves to v{self.version}",
            "failed": f"champion stays v{self.champion_version}, v{self.version} is the candidate",
        }[self.decision.kind]
        return (
            f"{self.model_name} v{self.version} registered from {_SOURCE_LABELS[self.source]}; gate "
            f"{self.decision.kind}: {outcome} (MLflow run {self.run_id})"
        )


def _gate(
    client: MlflowClient, name: str, champion_version: int | None, candidate: Candidate, tolerance: Any
) -> GateDecision:
    """Run the gate of `candidate` against the champion version (its results read back from its tags)."""
    if champion_version is None:
        return evaluate_gate(candidate.metrics(), None, tolerance)
    champion_metrics, champion_data = version_results(client, client.get_model_version(name, str(champion_version)))
    return evaluate_gate(candidate.metrics(), champion_metrics, tolerance, candidate.test_data(), champion_data)


def _record(
    *,
    name: str,
    candidate: Candidate,
    data_md5: str,
    decision: GateDecision,
    champion_md5: str | None,
    tolerance: Any,
) -> dict[str, Any]:
    """registry.json: what was registered and decided, nothing run-dependent (module docstring)."""
    test_data = candidate.test_data()
    return {
        "model_name": name,
        "model_md5": candidate.model_md5,
        "data_md5": data_md5,
        "benchmarks": {
            benchmark: {"metrics": metrics, "data_md5": test_data[benchmark]}
            for benchmark, metrics in candidate.metrics().items()
        },
        "decision": {
            **decision.to_dict(),
            "champion_model_md5": champion_md5,
            "tolerance": {"mAP": tolerance.mAP, "rank1": tolerance.rank1},
        },
    }


def _champion_md5(client: MlflowClient, name: str, champion_version: int | None) -> str | None:
    if champion_version is None:
        return None
    return client.get_model_version(name, str(champion_version)).tags.get("model_md5") or None


@dataclass(frozen=True)
class GateCheck:
    """The gate's decision for a model that is not registered yet, and the champion it was compared with."""

    model_name: str
    decision: GateDecision
    champion_version: int | None


def check_gate(params: Params, model_file: str | Path, eval_dir: str | Path) -> GateCheck:
    """The gate's decision for `model_file` (evaluated under `eval_dir`) against the champion; registers nothing.

    A Kubeflow pipeline branches on it (`dsl.If`) before its register step; `run_register` runs the same gate again
    when it registers, so a champion that moved in between is still respected.

    Raises:
        TrackingError: the tracking store does not answer.
        RegistryError: a missing model file or evaluation folder, or an MLflow error while reading the registry.
    """
    from sanet.infra.tracking import check_tracking_uri, tracking_uri

    uri = tracking_uri(params)
    check_tracking_uri(uri)
    candidate = read_candidate(params, model_file, eval_dir)
    name = params.registry.model_name
    client = registry_client(uri)
    with global_tracking_uri(uri), mlflow_errors(uri, f"reading the champion of {name!r}"):
        champion_version = aliases(client, name).get(CHAMPION)
        decision = _gate(client, name, champion_version, candidate, params.registry.tolerance)
    return GateCheck(name, decision, champion_version)


def run_register(params: Params, model_file: str | Path, eval_dir: str | Path, out: str | Path) -> RegisterResult:
    """Register `model_file`, evaluated under `eval_dir`, as a new version; run the gate; write `out` (registry.json).

    Raises:
        TrackingError: the tracking store does not answer (checked first, in seconds).
        RegistryError: a missing model file or evaluation folder, an evaluation of another model file, or an MLflow
            error while registering (all but the last before anything is logged).
    """
    from sanet.infra.tracking import check_tracking_uri, tracking_uri

    uri = tracking_uri(params)
    check_tracking_uri(uri)
    candidate = read_candidate(params, model_file, eval_dir)
    out = Path(out)
    name = params.registry.model_name
    client = registry_client(uri)
    with global_tracking_uri(uri), mlflow_errors(uri, f"registering {name!r}"):
        return _register(params, candidate, name, client, uri, out)


def _register(
    params: Params, candidate: Candidate, name: str, client: MlflowClient, uri: str, out: Path
) -> RegisterResult:
    import mlflow

    from sanet.contracts.datasets import PARTIAL_BENCHMARKS
    from sanet.infra.preflight import redact
    from sanet.infra.provenance import sidecar_path, training_sidecar, write_sidecar
    from sanet.infra.tracking import git_sha, log_file, pipeline_run_id, run_tags, start_run

    run_params = model_params(params, candidate.params)
    tolerance = params.registry.tolerance
    # the training run: named by its sidecar beside the model file (or an older model file's meta), else tagged
    # with the model's md5
    trained_by = training_sidecar(candidate.model_file, candidate.model_md5)
    hints = (trained_by.get("train_run_id"), candidate.meta.get("train_run_id"))
    train_run = find_training_run(client, candidate.model_md5, *hints)
    logged = find_logged_model(client, train_run) if train_run is not None else None
    train_run_id = train_run.info.run_id if train_run is not None else None
    data_md5 = str(candidate.meta.get("data_md5") or "")  # the model file's own record of its training data
    if not data_md5 and train_run is not None:
        data_md5 = train_run.data.tags.get("data_md5", "")
    inherited = trained_by.get("pipeline_run") or (train_run.data.tags.get("pipeline_run") if train_run else None)
    provenance = {
        "git_sha": git_sha(),
        "data_md5": data_md5,
        "pipeline_run": pipeline_run_id(inherited or candidate.meta.get("pipeline_run")),
    }
    extra = {"pipeline_run": provenance["pipeline_run"], "model_name": name, "model_md5": candidate.model_md5}
    if train_run_id:
        extra["train_run_id"] = train_run_id
    tags = run_tags(run_params, provenance["data_md5"], stage="register", extra=extra)
    metrics = candidate.metrics()
    with start_run(run_params, stage="register", run_name=f"register {name} ({params.profile})", tags=tags) as run:
        run_id = run.info.run_id
        if logged is not None:
            source: Literal["train_run", "register_run"] = "train_run"
        else:
            from sanet.serving import log_feature_model

            source = "register_run"
            log_feature_model(candidate.model_file, run_params)
            logged = find_logged_model(client, client.get_run(run_id))
            if logged is None:  # log_feature_model finalises the model it logs: should not happen
                raise RegistryError(f"the model logged in run {run_id} is not finished: rerun `sanet register`")
        # the results as the run's metrics, linked to the logged model (its page in the UI shows them)
        results = {f"{b}/{metric}": float(v) for b, values in metrics.items() for metric, v in values.items()}
        mlflow.log_metrics(results, model_id=logged.model_id)
        ensure_registered_model(client, name, MODEL_DESCRIPTION)
        champion_version = aliases(client, name).get(CHAMPION)
        decision = _gate(client, name, champion_version, candidate, tolerance)
        gate_tags = decision_tags(decision, champion_version, tolerance)
        # the run holds the full results (metrics, test-set md5s, the gate's numbers); the version a handful of tags
        mlflow.set_tags({**result_tags(metrics, candidate.test_data()), **gate_tags})
        version_tags = {
            **{key: gate_tags[key] for key in VERSION_GATE_TAGS},
            "git_sha": provenance["git_sha"],
            "data_md5": provenance["data_md5"],
            "model_md5": candidate.model_md5,
            REGISTER_RUN_TAG: run_id,
            **headline_tags(metrics, PARTIAL_BENCHMARKS),
        }
        created = mlflow.register_model(logged.model_uri, name, tags=version_tags)
        client.update_model_version(name, created.version, description=f"gate {decision.kind}: {decision.reason}")
        version = int(created.version)
        client.set_registered_model_alias(name, CANDIDATE, str(version))
        if decision.passed:
            client.set_registered_model_alias(name, CHAMPION, str(version))
        after = aliases(client, name)
        record = _record(
            name=name,
            candidate=candidate,
            data_md5=data_md5,
            decision=decision,
            champion_md5=_champion_md5(client, name, champion_version),
            tolerance=tolerance,
        )
        write_record(out, record)
        log_file(out)
        sidecar = write_sidecar(
            sidecar_path(out),
            {
                "model_name": name,
                "model_md5": candidate.model_md5,
                "version": version,
                "aliases": after,
                "champion_version": champion_version,
                "source": source,
                "source_uri": logged.model_uri,
                "tracking_uri": redact(uri),
                "run_ids": {"register": run_id, "train": train_run_id, "model_source": logged.source_run_id},
                **provenance,
            },
        )
        log_file(sidecar)
        mlflow.log_metric("gate/passed", 1.0 if decision.passed else 0.0)
        mlflow.set_tags({"model_version": str(version), "model_source": source})
    return RegisterResult(name, version, source, decision, after.get(CHAMPION), out, run_id)
