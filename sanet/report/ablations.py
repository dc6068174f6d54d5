"""The runs of the paper's Tables 3 and 4 (ablations on Partial-iLIDS-P), found in the MLflow tracking store.

`make ablations` runs each setting as a DVC experiment; the report shows the newest comparable run per setting. Only
runs that differ from the current params in the ablated ones count, so that the table compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sanet.contracts.results import METRICS, Evaluation

if TYPE_CHECKING:
    from mlflow.entities import Experiment, Run
    from mlflow.store.entities.paged_list import PagedList

    from sanet.config import Params


ABLATION_BENCHMARK = "partial_ilids_p"
"""The paper's Tables 3 and 4 are on Partial-iLIDS-P."""

ABLATED_PARAMS: tuple[str, ...] = ("model.variant", "model.afe.layers", "model.afe.kernel")
"""MLflow params (`sanet.infra.tracking.flat_params`: dotted params.yaml keys) that Tables 3 and 4 vary."""

RESULT_NEUTRAL_PARAMS: frozenset[str] = frozenset(
    {
        "data.workers",
        "data.evaluate",  # which benchmarks, not how
        "data.root",  # the data's content is compared through the data_md5 tag instead
        "evaluation.batch_size",
        "evaluation.chunk_mib",  # memory budget of the distance chunks
        "masks.openpifpaf.device",
        "masks.openpifpaf.batch_size",
        "train.out_dir",
        "masks.out_dir",
        "masks.coverage_file",
        "masks.metrics_file",
        "train.log_every",
    }
)
"""MLflow params that do not change a result: an ablation run may differ from the current params in these.
(`tracking.*` is not logged as params at all.)"""


@dataclass(frozen=True)
class AblationRun:
    """The newest MLflow evaluate run of one ablation setting on Partial-iLIDS-P; `metrics` are fractions."""

    run_id: str
    variant: str
    layers: int
    kernel: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class AblationSearch:
    """The ablation runs found, keyed by (variant, afe_layers, afe_kernel); `skipped` says why none were looked for."""

    runs: dict[tuple[str, int, int], AblationRun] = field(default_factory=dict)
    skipped: str | None = None


def _evaluate_runs(uri: str) -> list[Any]:
    """FINISHED evaluate runs on Partial-iLIDS-P in every active experiment of `uri`, newest first."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    experiment_ids: list[str] = []
    token: str | None = None
    page: PagedList[Experiment] | PagedList[Run]  # experiments, then their runs
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)
        experiment_ids += [experiment.experiment_id for experiment in page]
        token = page.token
        if not token:
            break
    if not experiment_ids:
        return []
    query = f"attributes.status = 'FINISHED' and tags.stage = 'evaluate' and tags.benchmark = '{ABLATION_BENCHMARK}'"
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, query, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            break
    return sorted(runs, key=lambda run: (-(run.info.start_time or 0), run.info.run_id))


def search_ablations(params: Params, uri: str, reference: Evaluation | None) -> AblationSearch:
    """Find the runs of Tables 3 and 4 in the tracking store at `uri`: the newest per (variant, layers, kernel).

    A run counts when it is a FINISHED `stage=evaluate` run with `benchmark=partial_ilids_p`, the same `profile` and
    `data_md5` tags as the current Partial-iLIDS-P evaluation (`reference`, its run.json), and flat params equal to
    the current `params` except the ablated ones (`ABLATED_PARAMS`) and those that do not change a result
    (`RESULT_NEUTRAL_PARAMS`); a param the run lacks counts as different. The search never fails the report: when
    the store cannot be searched, `skipped` says why.
    """
    from sanet.infra.tracking import flat_params

    if reference is None:
        return AblationSearch(skipped=f"{ABLATION_BENCHMARK} was not evaluated (Tables 3 and 4 are on it)")
    profile, data_md5 = reference.run.get("profile"), reference.run.get("data_md5")
    if not isinstance(profile, str) or not isinstance(data_md5, str) or not data_md5:
        return AblationSearch(
            skipped=f"{reference.folder / 'run.json'} names no profile or data_md5 to match the ablation runs with"
        )
    try:
        candidates = _evaluate_runs(uri)
    except Exception as exc:  # any failure of the store or the client: the report is still written without them
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return AblationSearch(
            skipped=f"the MLflow tracking store could not be searched ({type(exc).__name__}: {reason})"
        )
    expected = {
        name: str(value)
        for name, value in flat_params(params).items()
        if name not in ABLATED_PARAMS and name not in RESULT_NEUTRAL_PARAMS
    }
    found: dict[tuple[str, int, int], AblationRun] = {}
    for run in candidates:
        tags, logged = run.data.tags, run.data.params
        if tags.get("profile") != profile or tags.get("data_md5") != data_md5:
            continue
        if any(logged.get(name) != value for name, value in expected.items()):
            continue
        try:
            variant, layers, kernel = (logged[name] for name in ABLATED_PARAMS)
            key = (variant, int(layers), int(kernel))
        except (KeyError, ValueError):
            continue
        if key in found:
            continue  # newest first: an older run of the same setting
        metrics = {
            metric: float(run.data.metrics[f"{ABLATION_BENCHMARK}/{metric}"])
            for metric in METRICS
            if f"{ABLATION_BENCHMARK}/{metric}" in run.data.metrics
        }
        found[key] = AblationRun(run.info.run_id, key[0], key[1], key[2], metrics)
    return AblationSearch(runs=found)
