"""The stage results, read and checked, for the stages that consume them (the report, the registry's gate): what
`sanet evaluate` writes per benchmark
(`<eval_dir>/<benchmark>/{metrics.json,run.json,cmc.csv}`, and `diagnostics.json` when the evaluation wrote one:
older evaluations did not, and still report) and, when present, what `sanet train` writes
(`<train_dir>/{metrics.json,history.csv}`).

Metrics are fractions in the files. A missing or malformed file is a ReportError that names it and what to run, so
that an evaluation that did not finish never passes for one that did.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet.contracts.files import HISTORY_FILE, MODEL_FILE, TRAIN_DIR, TRAIN_METRICS_FILE, eval_files
from sanet.infra.errors import ReportError

if TYPE_CHECKING:
    from sanet.config import Params


METRICS: tuple[str, ...] = ("rank1", "rank3", "rank5", "rank10", "mAP", "mINP")
COUNTS: tuple[str, ...] = ("num_query", "num_gallery")


@dataclass(frozen=True)
class Evaluation:
    """One benchmark's evaluation: `metrics` (fractions and counts), `run` (run.json), the CMC, and
    the method diagnostics (`diagnostics.json`, see `sanet.evaluation.diagnostics`; None for an evaluation without
    them)."""

    benchmark: str
    folder: Path
    metrics: dict[str, float]
    run: dict[str, Any]
    cmc: list[float]
    diagnostics: dict[str, Any] | None = None

    @property
    def synthetic(self) -> bool:
        return bool(self.run["synthetic"])


@dataclass(frozen=True)
class Training:
    """What `sanet train` wrote: the summary (`metrics.json`, None when absent) and the per-epoch history rows."""

    summary: dict[str, Any] | None
    history: list[dict[str, float | None]]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _read_text(path: Path, hint: str) -> str:
    """The text of `path`, or a ReportError saying it is missing or unreadable, and `hint` (what to run)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}): {hint}") from None


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    """A JSON object from `path`, or a ReportError naming the file, the problem and `hint` (what to run)."""
    text = _read_text(path, hint)
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): {hint}") from None
    except ValueError as exc:
        raise ReportError(f"{path}: {exc}: {hint}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} must hold a JSON object, not {type(data).__name__}: {hint}")
    return data


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): what a metric value must be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(data: Mapping[str, Any], key: str, path: Path, hint: str) -> float:
    value: Any = data.get(key)  # checked by is_number below
    if not is_number(value):
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
    # a measured speed (older evaluations wrote one) is not read: what depends on it would not be reproducible
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
    text = _read_text(path, hint)
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


def _read_diagnostics(path: Path, hint: str) -> dict[str, Any] | None:
    """`diagnostics.json` as a dict, None when the evaluation wrote none (an older one); malformed: ReportError."""
    if not path.is_file():
        return None
    return _read_json(path, hint)


def diagnostic(evaluation: Evaluation | None, *keys: str) -> Any:
    """The value at `keys` in an evaluation's diagnostics (`"floor", "rank1"`), None wherever anything is missing.

    A section marked `"available": false` (no mask store, no AFE) gives None too, as does a value that is not a
    finite number where a number is expected, so that the report shows a dash rather than a wrong number.
    """
    node: Any = evaluation.diagnostics if evaluation is not None else None
    for key in keys:
        if not isinstance(node, dict) or node.get("available") is False:
            return None
        node = node.get(key)
    if isinstance(node, float) and not math.isfinite(node):
        return None
    return node


def load_evaluations(
    eval_dir: Path, benchmarks: Sequence[str], model_file: str = str(TRAIN_DIR / MODEL_FILE)
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
        files = eval_files(name, eval_dir)
        folder = files.folder
        if not folder.is_dir():
            continue
        hint = f"rerun `sanet evaluate --benchmark {name} --model {model_file}` (or `dvc repro`)"
        found[name] = Evaluation(
            benchmark=name,
            folder=folder,
            metrics=_read_metrics(files.metrics, hint),
            run=_read_run(files.run, name, hint),
            cmc=_read_cmc(files.cmc, hint),
            diagnostics=_read_diagnostics(files.diagnostics, hint),
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
    metrics_file, history_file = train_dir / TRAIN_METRICS_FILE, train_dir / HISTORY_FILE
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


def is_synthetic(evaluations: Mapping[str, Evaluation]) -> bool:
    """Whether any evaluation ran on the synthetic benchmark (its run.json says so)."""
    return any(evaluation.synthetic for evaluation in evaluations.values())


def primary_evaluation(evaluations: Mapping[str, Evaluation], params: Params) -> Evaluation:
    """The evaluation that describes the model: the training benchmark's when evaluated, else the first."""
    return evaluations.get(params.data.train) or next(iter(evaluations.values()))
