"""`sanet report`: the paper-comparison report (`reports/benchmark.md`), its PNG figures and one MLflow run.

Inputs are what `sanet evaluate` writes per benchmark (`<eval_dir>/<benchmark>/{metrics.json,run.json,cmc.csv}`) and,
when present, what `sanet train` writes (`<train_dir>/{metrics.json,history.csv}`). Metrics are fractions in the files
and percentages with one decimal in the report. The report holds:

- Tables 1 and 2 laid out like the paper's (methods as rows, benchmarks as column groups), with the paper's HPNet
  and SANet rows and the difference ours - paper SANet in points. On the synthetic benchmark (any `run.json` says
  `"synthetic": true`) a banner opens the file, and the paper's numbers go to separate "paper reference" tables with no
  difference: they were measured on other images.
- The full metrics (Rank-1/3/5/10, mAP, mINP, query and gallery counts), training, each benchmark's protocol, and the
  provenance of the runs (model, data and code hashes, MLflow run ids, pipeline run).
- Tables 3 and 4 (ablations on Partial-iLIDS-P) from the MLflow tracking store, when at least two settings of a
  table have runs (`search_ablations` says which runs count).

Only the benchmarks of `data.evaluate` are reported, so that the report depends on the inputs DVC declares; a
benchmark whose folder is missing shows as "not evaluated". The Markdown and the PNGs are byte-identical for the same
inputs (no clock, fixed PNG metadata), so that DVC sees an unchanged output as unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet import paper_results as paper
from sanet.atomic import atomic_write
from sanet.data.benchmarks import BENCHMARKS, ReIDBenchmark
from sanet.errors import ReportError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from sanet.config import Params

__all__ = [
    "ABLATED_PARAMS",
    "ABLATION_BENCHMARK",
    "RESULT_NEUTRAL_PARAMS",
    "AblationRun",
    "AblationSearch",
    "Evaluation",
    "ReportResult",
    "Training",
    "load_evaluations",
    "load_training",
    "render_markdown",
    "render_terminal_table",
    "run_report",
    "search_ablations",
]

METRICS: tuple[str, ...] = ("rank1", "rank3", "rank5", "rank10", "mAP", "mINP")
COUNTS: tuple[str, ...] = ("num_query", "num_gallery")
LABELS: dict[str, str] = {
    "rank1": "Rank-1",
    "rank3": "Rank-3",
    "rank5": "Rank-5",
    "rank10": "Rank-10",
    "mAP": "mAP",
    "mINP": "mINP",
}
DASH = "–"
NOT_EVALUATED = "not evaluated"
NOT_RUN = "not run (make ablations)"
DPI = 120

ABLATION_BENCHMARK = "partial_ilids_p"
"""The paper's Tables 3 and 4 are on Partial-iLIDS-P."""

ABLATED_PARAMS: tuple[str, ...] = ("variant", "afe_layers", "afe_kernel")
"""Flat params (`sanet.tracking.flat_params`) that Tables 3 and 4 vary."""

RESULT_NEUTRAL_PARAMS: frozenset[str] = frozenset(
    {
        "workers",  # data.workers
        "evaluate",  # data.evaluate: which benchmarks, not how
        "root",  # data.root: the data's content is compared through the data_md5 tag instead
        "evaluation_batch_size",
        "chunk_mib",  # memory budget of the distance chunks
        "openpifpaf_device",
        "openpifpaf_batch_size",
        "train_out_dir",
        "masks_out_dir",
        "coverage_file",
        "log_every",
    }
)
"""Flat params that do not change a result: an ablation run may differ from the current params in these.
(`tracking.*` is not logged as params at all.)"""

# Per benchmark: the camera rule and which release (DESIGN section 2); folders come from the benchmark classes.
_MARKET_RULE = (
    "images of person id -1 (junk) are dropped; gallery images with the query's person id and camera are excluded; "
    "person id 0 stays in the gallery as a distractor"
)
_PARTIAL_RULE = "no camera information: queries get camera 0 and gallery images camera 1, so nothing is excluded"
_PROTOCOL_NOTES: dict[str, str] = {
    "market1501": "the release v15.09.15",
    "dukemtmc": "the DukeMTMC-reID release in the Market-1501 format",
    "partial_reid": "occluded queries: the protocol of HPNet, the paper's baseline",
    "partial_reid_cropped": "the cropped partial-body images as queries; the paper has no number for it",
    "partial_ilids_p": "the DSR release (He et al., CVPR 2018): HPNet's published DSR results are the paper's -P row",
    "partial_ilids_o": "the FPR release (He et al., ICCV 2019): HPNet's published FPR results are the paper's -O row",
}

_PROVENANCE_KEYS: tuple[str, ...] = (
    "variant",
    "backbone",
    "profile",
    "afe_layers",
    "afe_kernel",
    "triplet_weight",
    "distance",
    "rerank",
    "input",
    "synthetic",
    "git_sha",
    "model_file",
    "model_md5",
    "data_md5",
    "mlflow_run_id",
    "train_run_id",
    "pipeline_run",
    "evaluated_at",
)


# ---- inputs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One benchmark's evaluation: `metrics` (fractions, counts, images_per_second), `run` (run.json), the CMC."""

    benchmark: str
    folder: Path
    metrics: dict[str, float]
    run: dict[str, Any]
    cmc: list[float]

    @property
    def synthetic(self) -> bool:
        return bool(self.run["synthetic"])


@dataclass(frozen=True)
class Training:
    """What `sanet train` wrote: the summary (`metrics.json`, None when absent) and the per-epoch history rows."""

    summary: dict[str, Any] | None
    history: list[dict[str, float | None]]


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


@dataclass(frozen=True)
class ReportResult:
    """What `run_report` wrote: the Markdown file, the PNG figures, the terminal table (also in `table_path`, what
    `make demo` prints) and the MLflow run id."""

    path: Path
    figures: list[Path]
    terminal_table: str
    table_path: Path
    synthetic: bool
    mlflow_run_id: str


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    """A JSON object from `path`, or a ReportError naming the file, the problem and `hint` (what to run)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}): {hint}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): {hint}") from None
    except ValueError as exc:
        raise ReportError(f"{path}: {exc}: {hint}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} must hold a JSON object, not {type(data).__name__}: {hint}")
    return data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(data: Mapping[str, Any], key: str, path: Path, hint: str) -> float:
    value = data.get(key)
    if not _number(value):
        raise ReportError(f"{path}: {key!r} must be a number, got {value!r}: {hint}")
    if not 0.0 <= value <= 1.0:
        raise ReportError(f"{path}: {key!r} is {value}, but metrics are fractions in [0, 1] (a percentage?): {hint}")
    return float(value)


def _read_metrics(path: Path, hint: str) -> dict[str, float]:
    data = _read_json(path, hint)
    metrics = {key: _fraction(data, key, path, hint) for key in METRICS}
    for key in COUNTS:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ReportError(f"{path}: {key!r} must be a non-negative integer, got {value!r}: {hint}")
        metrics[key] = value
    speed = data.get("images_per_second")
    if speed is not None:
        if not _number(speed) or speed < 0:
            raise ReportError(f"{path}: 'images_per_second' must be a non-negative number, got {speed!r}: {hint}")
        metrics["images_per_second"] = float(speed)
    return metrics


def _read_run(path: Path, benchmark: str, hint: str) -> dict[str, Any]:
    run = _read_json(path, hint)
    if run.get("benchmark") != benchmark:
        raise ReportError(
            f"{path} says benchmark {run.get('benchmark')!r} but lies in the folder of {benchmark!r}: "
            f"the evaluation folders were mixed up; {hint}"
        )
    if not isinstance(run.get("synthetic"), bool):
        raise ReportError(f"{path}: 'synthetic' must be true or false, got {run.get('synthetic')!r}: {hint}")
    return run


def _read_cmc(path: Path, hint: str) -> list[float]:
    """The CMC curve from `rank,cmc` rows with ranks 1..n in order and non-decreasing fractions."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}): {hint}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [cell.strip() for cell in rows[0]] != ["rank", "cmc"]:
        raise ReportError(f"{path}: the header must be 'rank,cmc': {hint}")
    curve: list[float] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            rank, value = int(row[0]), float(row[1])
        except (ValueError, IndexError):
            raise ReportError(
                f"{path}, line {line}: expected 'rank,cmc' numbers, got {','.join(row)!r}: {hint}"
            ) from None
        if rank != len(curve) + 1:
            raise ReportError(f"{path}, line {line}: rank {rank} where rank {len(curve) + 1} belongs: {hint}")
        if not 0.0 <= value <= 1.0:
            raise ReportError(f"{path}, line {line}: {value} is not a fraction in [0, 1]: {hint}")
        if curve and value < curve[-1] - 1e-9:
            raise ReportError(f"{path}, line {line}: the CMC curve decreases at rank {rank}: {hint}")
        curve.append(value)
    if not curve:
        raise ReportError(f"{path} has no rows: {hint}")
    return curve


def load_evaluations(
    eval_dir: Path, benchmarks: Sequence[str], model_file: str = "outputs/train/model.pt"
) -> dict[str, Evaluation]:
    """Read and check `<eval_dir>/<benchmark>/` for each of `benchmarks` that has a folder, in that order.

    A benchmark without a folder is left out (the report shows it as not evaluated); a folder with a missing or
    malformed file is an error, since an evaluation that did not finish must not pass for one that did.

    Raises:
        ReportError: `eval_dir` holds none of `benchmarks`, or a file is missing or malformed (named).
    """
    eval_dir = Path(eval_dir)
    nothing = (
        f"no evaluation results in {eval_dir} (looked for {', '.join(benchmarks)}): run `dvc repro` or "
        f"`sanet evaluate --benchmark NAME --model {model_file}`"
    )
    if not eval_dir.is_dir():
        raise ReportError(nothing)
    found: dict[str, Evaluation] = {}
    for name in benchmarks:
        folder = eval_dir / name
        if not folder.is_dir():
            continue
        hint = f"rerun `sanet evaluate --benchmark {name} --model {model_file}` (or `dvc repro`)"
        found[name] = Evaluation(
            benchmark=name,
            folder=folder,
            metrics=_read_metrics(folder / "metrics.json", hint),
            run=_read_run(folder / "run.json", name, hint),
            cmc=_read_cmc(folder / "cmc.csv", hint),
        )
    if not found:
        raise ReportError(nothing)
    return found


def _read_history(path: Path, hint: str) -> list[dict[str, float | None]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}): {hint}") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "epoch" not in reader.fieldnames:
        raise ReportError(f"{path}: the header must name an 'epoch' column: {hint}")
    rows: list[dict[str, float | None]] = []
    for line, raw in enumerate(reader, start=2):
        row: dict[str, float | None] = {}
        for key, value in raw.items():
            if key is None:
                raise ReportError(f"{path}, line {line}: more cells than columns: {hint}")
            value = (value or "").strip()
            try:
                row[key] = float(value) if value else None
            except ValueError:
                raise ReportError(f"{path}, line {line}: {key} = {value!r} is not a number: {hint}") from None
        if row["epoch"] is None:
            raise ReportError(f"{path}, line {line}: the epoch is empty: {hint}")
        rows.append(row)
    return rows


def load_training(train_dir: Path) -> Training | None:
    """Read `<train_dir>/metrics.json` and `history.csv`; None when neither exists (an evaluate-only report).

    Raises:
        ReportError: a file exists but is malformed (named).
    """
    train_dir = Path(train_dir)
    metrics_file, history_file = train_dir / "metrics.json", train_dir / "history.csv"
    if not metrics_file.is_file() and not history_file.is_file():
        return None
    hint = "rerun `sanet train` (or `dvc repro`)"
    summary: dict[str, Any] | None = None
    if metrics_file.is_file():
        summary = _read_json(metrics_file, hint)
        for key in ("final", "untrained"):
            block = summary.get(key)
            if block is None and key == "untrained":
                continue
            if not isinstance(block, dict):
                raise ReportError(f"{metrics_file}: {key!r} must be an object of metrics: {hint}")
            for metric in ("rank1", "mAP"):
                _fraction(block, metric, metrics_file, hint)
    history = _read_history(history_file, hint) if history_file.is_file() else []
    return Training(summary=summary, history=history)


# ---- ablations from MLflow -------------------------------------------------------------------------------------


def _evaluate_runs(uri: str) -> list[Any]:
    """FINISHED evaluate runs on Partial-iLIDS-P in every active experiment of `uri`, newest first."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    experiment_ids: list[str] = []
    token: str | None = None
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
    from sanet.tracking import flat_params

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
            key = (logged["variant"], int(logged["afe_layers"]), int(logged["afe_kernel"]))
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


# ---- formatting ------------------------------------------------------------------------------------------------


def _ours(value: float | None) -> str:
    """A fraction as a percentage with one decimal."""
    return DASH if value is None else f"{100 * value:.1f}"


def _paper(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def _diff(ours: float | None, published: float | None) -> str:
    """ours (a fraction) - published (percent), in points, from the one-decimal numbers the table shows."""
    if ours is None or published is None:
        return DASH
    points = round(float(_ours(ours)) - published, 1) + 0.0  # + 0.0: no "-0.0"
    return f"{points:+.1f}"


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table; columns of numbers (dashes and "not evaluated" aside) are right-aligned, others left."""
    rows = [list(row) for row in rows]
    align = [":---"]
    for column in range(1, len(header)):
        cells = [row[column] for row in rows if row[column] not in (DASH, NOT_EVALUATED, NOT_RUN)]
        align.append("---:" if cells and all(_numeric(cell) for cell in cells) else ":---")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _name(benchmark: str) -> str:
    return paper.BENCHMARK_NAMES.get(benchmark, benchmark)


def _link(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _code(value: Any) -> str:
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def _is_synthetic(evaluations: Mapping[str, Evaluation]) -> bool:
    return any(evaluation.synthetic for evaluation in evaluations.values())


def _primary(evaluations: Mapping[str, Evaluation], params: Params) -> Evaluation:
    """The evaluation that describes the model: the training benchmark's when evaluated, else the first."""
    return evaluations.get(params.data.train) or next(iter(evaluations.values()))


# ---- Markdown sections -----------------------------------------------------------------------------------------


def _comparison_section(
    title: str,
    benchmarks: Sequence[str],
    metrics: Sequence[str],
    evaluations: Mapping[str, Evaluation],
    synthetic: bool,
    extra: Sequence[str] = (),
) -> list[str]:
    """A table laid out like the paper's: methods as rows, benchmark x metric columns (`extra`: ours only)."""
    columns = [(b, m) for b in (*benchmarks, *extra) for m in metrics]
    header = ["Method"] + [f"{_name(b)} {LABELS[m]}" for b, m in columns]

    def ours(benchmark: str, metric: str) -> str:
        evaluation = evaluations.get(benchmark)
        return NOT_EVALUATED if evaluation is None else _ours(evaluation.metrics[metric])

    def published(
        table: Mapping[str, Mapping[str, float | None]], label: str, keys: Sequence[tuple[str, str]]
    ) -> list[str]:
        return [label] + [_paper(paper.paper_value(table, b, m)) for b, m in keys]

    lines = [f"## {title}", ""]
    if synthetic:
        lines += _table(header, [["Ours (synthetic data)"] + [ours(b, m) for b, m in columns]])
        reference = [(b, m) for b in benchmarks for m in metrics]
        lines += [
            "",
            "Paper reference (measured on the real benchmarks: not comparable with the synthetic numbers above):",
            "",
        ]
        lines += _table(
            ["Method"] + [f"{_name(b)} {LABELS[m]}" for b, m in reference],
            [published(paper.HPNET, "HPNet (paper)", reference), published(paper.SANET, "SANet (paper)", reference)],
        )
    else:
        diff = ["Δ ours − SANet (paper)"]
        for b, m in columns:
            evaluation = evaluations.get(b)
            diff.append(_diff(evaluation.metrics[m] if evaluation else None, paper.paper_value(paper.SANET, b, m)))
        rows = [
            published(paper.HPNET, "HPNet (paper)", columns),
            published(paper.SANET, "SANet (paper)", columns),
            ["Ours"] + [ours(b, m) for b, m in columns],
            diff,
        ]
        lines += _table(header, rows)
    return [*lines, ""]


def _full_metrics_section(evaluations: Mapping[str, Evaluation], benchmarks: Sequence[str], out_dir: Path) -> list[str]:
    header = ["Benchmark", "Queries", "Gallery", *(LABELS[m] for m in METRICS), "Images/s", "Pictures"]
    rows = []
    for name in benchmarks:
        evaluation = evaluations.get(name)
        if evaluation is None:
            rows.append([_name(name), NOT_EVALUATED] + [DASH] * (len(header) - 2))
            continue
        pictures = [
            f"[{label}]({_link(evaluation.folder / file, out_dir)})"
            for label, file in (("ranked list", "ranked_list.png"), ("routing", "routing.png"))
            if (evaluation.folder / file).is_file()
        ]
        speed = evaluation.metrics.get("images_per_second")
        rows.append(
            [
                _name(name),
                str(int(evaluation.metrics["num_query"])),
                str(int(evaluation.metrics["num_gallery"])),
                *(_ours(evaluation.metrics[m]) for m in METRICS),
                DASH if speed is None else f"{speed:.1f}",
                ", ".join(pictures) or DASH,
            ]
        )
    return ["## Full metrics (ours)", "", *_table(header, rows), ""]


def _training_section(training: Training, params: Params, figure: str | None) -> list[str]:
    lines = ["## Training", ""]
    summary = training.summary
    if summary is not None:
        facts = [f"Trained on {_name(str(summary.get('benchmark', params.data.train)))}"]
        if _number(summary.get("epochs")):
            facts.append(f"{int(summary['epochs'])} epochs")
        if _number(summary.get("steps")):
            facts.append(f"{int(summary['steps'])} steps")
        if _number(summary.get("train_seconds")):
            facts.append(f"{summary['train_seconds']:.1f} s")
        if _number(summary.get("images_per_second")):
            facts.append(f"{summary['images_per_second']:.1f} images/s")
        lines += [", ".join(facts) + ".", ""]
        blocks = [(label, summary.get(key)) for label, key in (("Untrained", "untrained"), ("Trained", "final"))]
        blocks = [(label, block) for label, block in blocks if isinstance(block, dict)]
        shown = [m for m in METRICS if any(_number(block.get(m)) for _, block in blocks)]
        rows = [
            [label, *(_ours(block[m]) if _number(block.get(m)) else DASH for m in shown)] for label, block in blocks
        ]
        lines += [
            f"Validation on {_name(str(summary.get('benchmark', params.data.train)))}'s query/gallery, before and "
            "after training (the untrained network is the baseline that shows the network learned):",
            "",
            *_table(["Model", *(LABELS[m] for m in shown)], rows),
            "",
        ]
    if figure:
        lines += [f"![Training curves]({figure})", ""]
    return lines


def _ablation_table(
    label: str,
    settings: Sequence[tuple[str, tuple[str, int, int], Mapping[str, float | None] | None]],
    metrics: Sequence[str],
    search: AblationSearch,
    synthetic: bool,
    extra_columns: Callable[[tuple[str, int, int]], list[str]] | None = None,
    extra_header: Sequence[str] = (),
) -> list[str]:
    """Rows of one ablation table: ours from the runs found, the paper's beside (real data) or apart (synthetic)."""
    header = [label, *extra_header, *(f"Ours {LABELS[m]}" for m in metrics)]
    if not synthetic:
        header += [*(f"Paper {LABELS[m]}" for m in metrics), *(f"Δ {LABELS[m]}" for m in metrics)]
    header.append("MLflow run")
    rows = []
    for name, key, published in settings:
        run = search.runs.get(key)
        row = [name, *(extra_columns(key) if extra_columns else [])]
        if run is None:
            row += [NOT_RUN] + [DASH] * (len(metrics) - 1)
        else:
            row += [_ours(run.metrics.get(m)) for m in metrics]
        if not synthetic:
            row += [_paper(published.get(m) if published else None) for m in metrics]
            row += [
                _diff(run.metrics.get(m) if run else None, published.get(m) if published else None) for m in metrics
            ]
        row.append(f"`{run.run_id}`" if run else DASH)
        rows.append(row)
    lines = _table(header, rows)
    if synthetic:
        reference = [
            [name, *(_paper(published.get(m)) for m in metrics)] for name, _, published in settings if published
        ]
        if reference:
            lines += ["", "Paper reference (real Partial-iLIDS-P, not comparable):", ""]
            lines += _table([label, *(f"Paper {LABELS[m]}" for m in metrics)], reference)
    return lines


def _ablation_sections(params: Params, search: AblationSearch, synthetic: bool) -> list[str]:
    lines = ["## Ablations on Partial-iLIDS-P (Tables 3 and 4)", ""]
    if search.skipped:
        return [*lines, f"The ablation search was skipped: {search.skipped}.", ""]
    layers, kernel = params.model.afe.layers, params.model.afe.kernel
    lines += [
        "From the MLflow tracking store: FINISHED evaluate runs on Partial-iLIDS-P with the same profile, data and "
        "parameters as this report's run except the model variant and the AFE layers and kernel; the newest run "
        "per setting. `make ablations` runs the missing ones.",
        "",
    ]
    paper_layers, paper_kernel = paper.PAPER_AFE
    table3 = [
        (
            paper.TABLE3_LABELS[v],
            (v, layers, kernel),
            paper.TABLE3[v] if (layers, kernel) == paper.PAPER_AFE or v in ("hpnet", "global") else None,
        )
        for v in paper.TABLE3
    ]
    table4_layers = [
        (f"{n} layers", ("sanet", n, kernel), paper.TABLE4_LAYERS[n] if kernel == paper_kernel else None)
        for n in paper.TABLE4_LAYERS
    ]
    table4_kernels = [
        (f"Conv{k}×{k}", ("sanet", layers, k), paper.TABLE4_KERNELS[k] if layers == paper_layers else None)
        for k in paper.TABLE4_KERNELS
    ]
    shown = False
    if len({key for _, key, _ in table3 if key in search.runs}) >= 2:
        shown = True
        lines += [f"### Table 3: components (AFE {layers} layers, kernel {kernel})", ""]
        lines += _ablation_table(
            "Model",
            table3,
            paper.TABLE3_METRICS,
            search,
            synthetic,
            extra_columns=lambda key: list(paper.TABLE3_COMPONENTS[key[0]]),
            extra_header=("AFE", "MFE"),
        )
        lines.append("")
    else:
        lines += ["Table 3 (components): fewer than two of its settings have runs.", ""]
    if len({key for _, key, _ in (*table4_layers, *table4_kernels) if key in search.runs}) >= 2:
        shown = True
        lines += [f"### Table 4: AFE layers (kernel {kernel})", ""]
        lines += _ablation_table("Layer number", table4_layers, paper.TABLE4_METRICS, search, synthetic)
        lines += ["", f"### Table 4: cell operation ({layers} layers)", ""]
        lines += _ablation_table("Cell operation", table4_kernels, paper.TABLE4_METRICS, search, synthetic)
        lines.append("")
    else:
        lines += ["Table 4 (AFE layers and kernel): fewer than two of its settings have runs.", ""]
    if shown and (layers, kernel) != paper.PAPER_AFE:
        lines += [
            f"The paper's numbers are shown only where its setting matches (it uses {paper_layers} layers and "
            f"{paper_kernel}×{paper_kernel} cells; this run uses {layers} and {kernel}×{kernel}).",
            "",
        ]
    return lines


def _protocol_section(params: Params, evaluations: Mapping[str, Evaluation]) -> list[str]:
    train = params.data.train
    lines = [
        "## Protocols",
        "",
        f"The model is trained on {_name(train)}'s training split only; every other benchmark is evaluated without "
        "fine-tuning. AP is the non-interpolated average of the precision at each relevant rank; mINP is the mean "
        "inverse negative penalty.",
        "",
    ]
    for name in params.data.evaluate:
        cls: type[ReIDBenchmark] = BENCHMARKS[name]
        folders = {entry.split: entry.folder for entry in cls.layout}
        rule = _MARKET_RULE if "train" in folders else _PARTIAL_RULE
        note = _PROTOCOL_NOTES.get(name, "")
        evaluation = evaluations.get(name)
        size = (
            f"{int(evaluation.metrics['num_query'])} queries, {int(evaluation.metrics['num_gallery'])} gallery images"
            if evaluation
            else NOT_EVALUATED
        )
        lines.append(
            f"- **{_name(name)}** (`{name}`, folder `{cls.dataset_dir}/`): queries `{folders['query']}/`, gallery "
            f"`{folders['gallery']}/`; {rule}; {note}. This run: {size}."
        )
    return [*lines, ""]


def _provenance_section(evaluations: Mapping[str, Evaluation]) -> list[str]:
    """Values shared by every benchmark's run.json once, the ones that differ per benchmark in a table."""
    common: list[tuple[str, Any]] = []
    varying: list[str] = []
    for key in _PROVENANCE_KEYS:
        values = [evaluation.run.get(key) for evaluation in evaluations.values()]
        if all(value == values[0] for value in values):
            common.append((key, values[0]))
        else:
            varying.append(key)
    lines = ["## Provenance", "", *_table(["Field", "Value"], [[key, _code(value)] for key, value in common]), ""]
    if varying:
        rows = [[_name(name), *(_code(e.run.get(key)) for key in varying)] for name, e in evaluations.items()]
        lines += ["Per benchmark:", "", *_table(["Benchmark", *varying], rows), ""]
    return lines


def render_markdown(
    params: Params,
    evaluations: Mapping[str, Evaluation],
    training: Training | None,
    search: AblationSearch,
    out: Path,
    figures: Mapping[str, Path],
) -> str:
    """The report as Markdown: deterministic for the same inputs (dates come from the inputs, never the clock)."""
    synthetic = _is_synthetic(evaluations)
    benchmarks = list(params.data.evaluate)
    out_dir = Path(out).parent
    primary = _primary(evaluations, params)
    lines: list[str] = []
    if synthetic:
        lines += [
            "> **Synthetic data: not comparable with the paper.** These are results on the project's synthetic "
            "benchmark (procedurally drawn pedestrians in the real benchmarks' folder layouts), not on Market-1501, "
            "DukeMTMC-reID, Partial-REID or Partial-iLIDS. The paper's numbers are listed apart, as a reference only.",
            "",
        ]
    lines += ["# SANet benchmark report", ""]
    run = primary.run
    lines += [
        f"Model: variant {_code(run.get('variant'))}, backbone {_code(run.get('backbone'))}, profile "
        f"{_code(run.get('profile'))}, AFE {_code(run.get('afe_layers'))} layers with kernel "
        f"{_code(run.get('afe_kernel'))}, distance {_code(run.get('distance'))}. Evaluated "
        f"{', '.join(sorted({str(e.run.get('evaluated_at') or DASH) for e in evaluations.values()}))}.",
        "",
        "Numbers are percentages with one decimal"
        + ("" if synthetic else "; Δ is ours minus the paper's SANet, in points")
        + f". Paper: {paper.CITATION}.",
        "",
    ]
    models = {str(e.run.get("model_md5")) for e in evaluations.values()}
    if len(models) > 1:
        lines += [
            "> **Warning:** the benchmarks were evaluated with different models (their `model_md5` differ, see "
            "Provenance): the rows below do not describe one model.",
            "",
        ]
    table1_extra = [b for b in benchmarks if b not in paper.TABLE1_BENCHMARKS and b not in paper.TABLE2_BENCHMARKS]
    lines += _comparison_section(
        "Table 1: partial re-ID benchmarks",
        paper.TABLE1_BENCHMARKS,
        paper.TABLE1_METRICS,
        evaluations,
        synthetic,
        extra=table1_extra,
    )
    lines += _comparison_section(
        "Table 2: holistic benchmarks", paper.TABLE2_BENCHMARKS, paper.TABLE2_METRICS, evaluations, synthetic
    )
    if "comparison" in figures:
        lines += [f"![Ours vs the paper]({_link(figures['comparison'], out_dir)})", ""]
    lines += _full_metrics_section(evaluations, benchmarks, out_dir)
    if "cmc" in figures:
        lines += [f"![CMC curves]({_link(figures['cmc'], out_dir)})", ""]
    if training is not None:
        figure = _link(figures["training"], out_dir) if "training" in figures else None
        lines += _training_section(training, params, figure)
    lines += _ablation_sections(params, search, synthetic)
    lines += _protocol_section(params, evaluations)
    lines += _provenance_section(evaluations)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_terminal_table(params: Params, evaluations: Mapping[str, Evaluation]) -> str:
    """The benchmark table for a terminal: one aligned row per evaluated benchmark, after a line naming the data."""
    if _is_synthetic(evaluations):
        first = "Data: the project's synthetic benchmark (the paper's numbers are on the real ones: not comparable)"
    else:
        first = "Data: the real benchmarks (paper: SANet, BMVC 2023)"
    header = ["Benchmark", "Rank-1", "Rank-5", "mAP", "mINP", "Paper R-1", "Paper mAP"]
    rows = [
        [
            _name(name),
            *(_ours(evaluation.metrics[m]) for m in ("rank1", "rank5", "mAP", "mINP")),
            _paper(paper.paper_value(paper.SANET, name, "rank1")),
            _paper(paper.paper_value(paper.SANET, name, "mAP")),
        ]
        for name, evaluation in evaluations.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    text = [first, line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    missing = [name for name in params.data.evaluate if name not in evaluations]
    if missing:
        text.append(f"{NOT_EVALUATED}: {', '.join(missing)}")
    return "\n".join(text)


# ---- figures ---------------------------------------------------------------------------------------------------


def _png(figure: Figure) -> bytes:
    """PNG bytes without the matplotlib version or a date in the metadata: the same figure gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _figure(width: float, height: float, columns: int = 1, rows: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, list(figure.subplots(rows, columns, squeeze=False).flat)


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_cmc(evaluations: Mapping[str, Evaluation], synthetic: bool) -> bytes:
    """CMC curves of every evaluated benchmark (ranks on x, matching rate in percent on y)."""
    figure, (ax,) = _figure(7.5, 4.8)
    for name, evaluation in evaluations.items():
        ranks = range(1, len(evaluation.cmc) + 1)
        ax.plot(ranks, [100 * v for v in evaluation.cmc], label=f"{_name(name)} (Rank-1 {_ours(evaluation.cmc[0])}%)")
    longest = max(len(e.cmc) for e in evaluations.values())
    ax.set_xlim(1, max(longest, 2))
    _integer_ticks(ax)
    ax.set_ylim(0, 100)
    ax.set_xlabel("Rank")
    ax.set_ylabel("Matching rate (%)")
    ax.set_title("CMC curves" + (" (synthetic benchmark)" if synthetic else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _png(figure)


def plot_training(training: Training) -> bytes | None:
    """Losses and learning rate per epoch, and the validation Rank-1/mAP points; None without history."""
    history = training.history
    if not history:
        return None
    validated = [row for row in history if row.get("rank1") is not None or row.get("mAP") is not None]
    untrained = (training.summary or {}).get("untrained")
    with_validation = bool(validated) or isinstance(untrained, dict)
    figure, axes = _figure(13.0 if with_validation else 9.0, 4.2, 3 if with_validation else 2)
    epochs = [float(row["epoch"] or 0) for row in history]

    def series(key: str) -> tuple[list[float], list[float]]:
        """(epochs, values) of the rows with a finite `key` (validation columns are empty on most rows)."""
        xs, ys = [], []
        for row in history:
            value = row.get(key)
            if value is not None and math.isfinite(value):
                xs.append(float(row["epoch"] or 0))
                ys.append(value)
        return xs, ys

    ax = axes[0]
    positive = True
    for key, label in (("loss", "total"), ("id", "ID"), ("triplet", "triplet"), ("focal", "focal")):
        xs, ys = series(key)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
            positive &= all(y > 0 for y in ys)
    if positive and ax.lines:
        ax.set_yscale("log")
    _integer_ticks(ax)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss (epoch mean)")
    ax.set_title("Training losses")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=9)

    ax = axes[1]
    xs, ys = series("lr")
    ax.plot(xs, ys, marker="o", markersize=3, color="tab:purple")
    _integer_ticks(ax)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Learning rate")
    ax.set_title("Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(True, alpha=0.3)

    if with_validation:
        ax = axes[2]
        for key, label, color in (("rank1", "Rank-1", "tab:blue"), ("mAP", "mAP", "tab:orange")):
            xs, ys = series(key)
            if isinstance(untrained, dict) and _number(untrained.get(key)):
                xs, ys = [0.0, *xs], [float(untrained[key]), *ys]
            ax.plot(xs, [100 * y for y in ys], marker="o", color=color, label=label)
        ax.set_xlim(min([0.0, *epochs]) - 0.5, max(epochs) + 0.5)
        _integer_ticks(ax)
        ax.set_ylim(0, 100)
        ax.set_xlabel("Epoch (0: untrained)")
        ax.set_ylabel("Validation (%)")
        ax.set_title("Validation on the training benchmark")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9)
    return _png(figure)


def plot_comparison(evaluations: Mapping[str, Evaluation], synthetic: bool) -> bytes:
    """Grouped bars of Rank-1 and mAP per benchmark: ours, the paper's SANet and HPNet (ours only when synthetic)."""
    names = list(evaluations)
    methods: list[tuple[str, Callable[[str, str], float | None], str]] = [
        ("Ours", lambda b, m: 100 * evaluations[b].metrics[m], "tab:blue")
    ]
    if not synthetic:
        methods += [
            ("SANet (paper)", lambda b, m: paper.paper_value(paper.SANET, b, m), "tab:orange"),
            ("HPNet (paper)", lambda b, m: paper.paper_value(paper.HPNET, b, m), "tab:gray"),
        ]
    figure, axes = _figure(max(7.0, 1.3 * len(names) + 2.0), 7.5, rows=2)
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, ("rank1", "mAP"), strict=True):
        for index, (label, value, color) in enumerate(methods):
            xs, ys = [], []
            for position, name in enumerate(names):
                number = value(name, metric)
                if number is not None:
                    xs.append(position - 0.4 + width * (index + 0.5))
                    ys.append(number)
            bars = ax.bar(xs, ys, width=width, label=label, color=color)
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(range(len(names)), [_name(n) for n in names], rotation=20, ha="right")
        ax.set_ylim(0, 108)
        ax.set_ylabel(f"{LABELS[metric]} (%)")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.02), ncols=len(methods), frameon=False)
    figure.suptitle(
        "Synthetic benchmark: ours only (the paper's numbers are on the real benchmarks)"
        if synthetic
        else "Ours vs the paper (SANet, HPNet)"
    )
    return _png(figure)


def _render_figures(
    evaluations: Mapping[str, Evaluation], training: Training | None, synthetic: bool
) -> dict[str, bytes]:
    import matplotlib.style

    with matplotlib.style.context("default"):  # the user's matplotlibrc must not change the pictures
        rendered = {"cmc": plot_cmc(evaluations, synthetic), "comparison": plot_comparison(evaluations, synthetic)}
        if training is not None and (curves := plot_training(training)) is not None:
            rendered["training"] = curves
    return rendered


# ---- the stage -------------------------------------------------------------------------------------------------


def run_report(
    params: Params,
    eval_dir: Path,
    train_dir: Path,
    out: Path,
    figures_dir: Path,
    ablations: bool = True,
) -> ReportResult:
    """Write the report to `out`, the terminal table beside it (`.txt`), the figures to `figures_dir`.

    Figures: `cmc.png`, `comparison.png` and, with a training history, `training.png`.

    Checks the tracking store first (an unreachable one fails in seconds, before any work), reads and checks the
    inputs, searches MLflow for the ablation runs when `ablations`, renders everything, then opens one MLflow run
    (stage `report`) that writes the files atomically and logs them as artifacts with the headline metrics
    (`<benchmark>/rank1`, ...). A `training.png` left from an earlier report is removed when there is no history.

    Raises:
        ReportError: missing or malformed inputs (the message names the file and what to run).
        TrackingError: the tracking store cannot be used.
    """
    import mlflow

    from sanet.tracking import check_tracking_uri, log_file, pipeline_run_id, run_tags, start_run, tracking_uri

    uri = tracking_uri(params)
    check_tracking_uri(uri)
    out, figures_dir = Path(out), Path(figures_dir)
    table_path = out.with_suffix(".txt")
    model_file = f"{params.train.out_dir}/model.pt"
    evaluations = load_evaluations(Path(eval_dir), params.data.evaluate, model_file)
    training = load_training(Path(train_dir))
    if ablations:
        search = search_ablations(params, uri, evaluations.get(ABLATION_BENCHMARK))
    else:
        search = AblationSearch(skipped="`sanet report --no-ablations` was given")
    synthetic = _is_synthetic(evaluations)
    rendered = _render_figures(evaluations, training, synthetic)
    figure_paths = {name: figures_dir / f"{name}.png" for name in rendered}
    markdown = render_markdown(params, evaluations, training, search, out, figure_paths)
    terminal = render_terminal_table(params, evaluations)

    primary = _primary(evaluations, params)
    trained_on = evaluations.get(params.data.train)
    extra = {
        "benchmarks": ",".join(evaluations),
        "synthetic": str(synthetic).lower(),
        "model_md5": str(primary.run.get("model_md5") or ""),
    }
    # SANET_PIPELINE_RUN when set, else the pipeline run of the evaluations (the model's), as the other stages do.
    inherited = [e.run.get("pipeline_run") for e in (primary, *evaluations.values()) if e.run.get("pipeline_run")]
    extra["pipeline_run"] = pipeline_run_id(str(inherited[0]) if inherited else None)
    tags = run_tags(
        params, data_md5=str(trained_on.run.get("data_md5") or "") if trained_on else "", stage="report", extra=extra
    )
    with start_run(params, stage="report", run_name=f"report ({params.profile})", tags=tags) as run:
        written = []
        for name in ("cmc", "training", "comparison"):
            if name in rendered:
                data = rendered[name]
                written.append(atomic_write(figure_paths[name], lambda handle, data=data: handle.write(data)))
        if "training" not in rendered:
            (figures_dir / "training.png").unlink(missing_ok=True)
        atomic_write(out, lambda handle: handle.write(markdown.encode("utf-8")))
        atomic_write(table_path, lambda handle: handle.write((terminal + "\n").encode("utf-8")))
        mlflow.log_metrics(
            {f"{name}/{metric}": e.metrics[metric] for name, e in evaluations.items() for metric in METRICS}
        )
        log_file(out, "report")
        log_file(table_path, "report")
        for path in written:
            log_file(path, "report/figures")
    return ReportResult(
        path=out,
        figures=written,
        terminal_table=terminal,
        table_path=table_path,
        synthetic=synthetic,
        mlflow_run_id=run.info.run_id,
    )
