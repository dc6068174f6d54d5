"""A study's summary: `<hpo.reports_dir>/<space>.json` (best params and value), four PNGs, and the MLflow parent run.

Re-runnable at any time, by any worker or a pipeline step of its own: each summary rewrites the files from the
study as it stands and logs to the parent run again (metrics at step = finished trials), then marks it FINISHED.
The JSON's `best.dotted` maps params.yaml keys to the best values, ready for `sanet train --set key=value`; its
`search` says how the study sampled (`sanet.hpo.search`): the sampler, the number of settings of a finite space
(null with a float), how many were tried, whether the space is `exhausted` (every setting tried: more trials would
add nothing), and the `duplicates` (trials that sampled a COMPLETE trial's settings and were not trained).

The JSON and the PNGs are DVC outputs: a deterministic function of the study's trials (their parameters, states and
values), so a fresh clone's `make demo` rewrites them byte for byte. The run-dependent facts (the storage URL, the
MLflow parent run and the trials' runs) go to MLflow and to the git-ignored sidecar `<space>.provenance.json`
beside the JSON (`sanet.infra.provenance`), never into them. The PNGs (`sanet.hpo.figures`): optimisation history,
parameter slices, intermediate values (validation score per epoch), parameter importances.

Importances: fANOVA (seeded) over the COMPLETE trials. They need at least `MIN_IMPORTANCE_TRIALS` (4) complete
trials: fANOVA fits a random forest to the trials' scores, and with 3 points or fewer any one parameter that
differs between them explains the scores exactly, so its shares would reflect which parameter the forest happened
to split on, not which one matters (a joint study has three). They also need two different scores (a tie carries no
information about any parameter) and two different settings. Otherwise `importances` is `{}` and
`importances_note` says why (the importance PNG shows the note). A one-parameter space's importance is 1 by
definition: `importances` is `{parameter: 1.0}` and the note says so (its effect is in the slice plot). Otherwise
every parameter of the space has an importance, they sum to 1, and `importances_note` is null.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sanet.hpo.errors import HPOError
from sanet.hpo.settings import objective_text
from sanet.hpo.spaces import check_space, space_params, to_dotted
from sanet.infra.atomic import atomic_write

if TYPE_CHECKING:
    import optuna

    from sanet.config import Params

__all__ = ["MIN_IMPORTANCE_TRIALS", "SummaryResult", "summarise_study"]

MIN_IMPORTANCE_TRIALS = 4  # complete trials before importances mean anything (module docstring)

_FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class SummaryResult:
    """What `summarise_study` found and wrote."""

    name: str
    best_value: float
    best_params: dict[str, Any]  # Optuna names (afe_layers, afe_kernel, triplet_weight)
    best_trial: int
    counts: dict[str, int]  # trials by state: complete, pruned, fail, running, waiting
    json_path: Path
    figures: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None


def _importances(study: optuna.Study, space: str, complete: int, seed: int) -> tuple[dict[str, float], str | None]:
    """Parameter importances (fANOVA, seeded: deterministic) and None; `{}` and a note saying why there are none
    (too few complete trials, ties, one setting); or, for a one-parameter space, 1.0 and a note (module docstring)."""
    import optuna

    names = space_params(space)
    if complete < MIN_IMPORTANCE_TRIALS:
        return {}, (
            f"too few complete trials ({complete}) for importances: they need at least {MIN_IMPORTANCE_TRIALS} "
            f"(see {space}-slice.png for the score of each setting)"
        )
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    scores = sorted({float(cast(float, t.value)) for t in done})  # a complete trial has a value
    if len(scores) < 2:
        return {}, (
            f"the {complete} complete trials tie (all scored {scores[0]:.6g}): importances need at least two "
            "different scores"
        )
    if len({tuple(sorted(t.params.items())) for t in done}) < 2:
        return {}, f"the {complete} complete trials all ran the same parameters: importances need two settings"
    if len(names) == 1:
        return {names[0]: 1.0}, (
            f"{names[0]} is the only parameter searched: its importance is 1 by definition "
            f"(its effect on the score is in {space}-slice.png)"
        )

    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        raw = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as exc:
        return {}, f"no importances (fANOVA: {exc})"
    values = {name: round(float(v), 6) if math.isfinite(float(v)) else 0.0 for name, v in raw.items()}
    return dict(sorted(values.items(), key=lambda item: (-item[1], item[0]))), None


def _history(trials: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    return [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(sorted(t.params.items()))}
        for t in sorted(trials, key=lambda t: t.number)
    ]


def _write(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def summarise_study(params: Params, space: str) -> SummaryResult:
    """Summarise the study of `space` (module docstring): report JSON, the four PNGs, the parent run.

    Raises:
        HPOError: the study is not in the storage, or holds no COMPLETE trial yet (the message names both).
        TrackingError: the tracking store does not answer.
    """
    from mlflow.entities import Metric

    from sanet.hpo.figures import FIGURES, figure_file, study_figures
    from sanet.hpo.search import search_report
    from sanet.hpo.settings import study_name
    from sanet.hpo.study import load_existing, mlflow_client, parent_run_of
    from sanet.hpo.study_storage import check_storage, open_storage, storage_url
    from sanet.infra.preflight import redact
    from sanet.infra.provenance import sidecar_path, write_sidecar
    from sanet.infra.tracking import check_tracking_uri, tracking_uri

    check_space(space)
    url = storage_url(params)
    check_tracking_uri(tracking_uri(params))
    check_storage(url)
    name = study_name(params, space)
    study = load_existing(params, space, open_storage(url))
    trials = study.get_trials(deepcopy=False)
    counts = {state: 0 for state in ("complete", "pruned", "fail", "running", "waiting")}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    if not counts["complete"]:
        raise HPOError(
            f"study {name} in {redact(url)} has no COMPLETE trial yet ({len(trials)} trial(s): "
            f"{', '.join(f'{v} {k}' for k, v in counts.items() if v) or 'none'}): run `sanet hpo --space {space}`"
        )
    best = study.best_trial
    importances, note = _importances(study, space, counts["complete"], params.hpo.seed)
    history = _history(trials)
    parent = parent_run_of(params, space, study)
    metric = f"{objective_text(params)} on {params.hpo.val_ids} held-out identities of {params.data.train}"
    report = {
        "study": name,
        "space": space,
        "direction": "maximize",
        "metric": metric,
        "best": {
            "value": best.value,
            "params": dict(sorted(best.params.items())),
            "dotted": dict(sorted(to_dotted(best.params).items())),
            "trial": best.number,
        },
        "trials": counts,
        "search": search_report(params, space, trials),
        "importances": importances,
        "importances_note": note,
        "history": history,
    }
    out = Path(params.hpo.reports_dir)
    json_path = _write(out / f"{space}.json", (json.dumps(report, indent=2) + "\n").encode())
    sidecar = write_sidecar(
        sidecar_path(json_path),
        {
            "study": name,
            "storage": redact(url),
            "parent_run_id": parent,
            "best_trial": best.number,
            "best_run_id": best.user_attrs.get("mlflow_run_id"),
            "trial_run_ids": {str(t.number): t.user_attrs.get("mlflow_run_id") for t in trials},
            "git_sha": study.user_attrs.get("git_sha"),
        },
    )
    drawn = study_figures(study, name, space_params(space), note, params.hpo.seed)
    figures = [_write(out / figure_file(space, kind), drawn[kind]) for kind in FIGURES]

    client = mlflow_client(params)
    finished = sum(counts[state.lower()] for state in _FINISHED)
    now = int(time.time() * 1000)
    assert best.value is not None  # Optuna's best trial is a complete one, which has a value
    metrics = [Metric("best_value", float(best.value), now, finished)]
    metrics += [Metric(f"best/{k}", float(v), now, finished) for k, v in sorted(best.params.items())]
    client.log_batch(parent, metrics=metrics)
    client.set_tag(parent, "best_trial", str(best.number))
    client.set_tag(parent, "best_params", json.dumps(dict(sorted(best.params.items()))))
    for path in (json_path, *figures, sidecar):
        client.log_artifact(parent, str(path))
    client.set_terminated(parent, "FINISHED")
    return SummaryResult(
        name=name,
        best_value=float(best.value),
        best_params=dict(best.params),
        best_trial=best.number,
        counts=counts,
        json_path=json_path,
        figures=figures,
        parent_run_id=parent,
    )
