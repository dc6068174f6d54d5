"""The `evaluate` stage: one trained model on one benchmark, with everything a researcher looks at afterwards.

`run_evaluate` loads the model file (architecture and input size from the file, so it stays valid after params.yaml
changes), extracts query and gallery features in batches (no gradients; AMP and channels-last on CUDA), ranks with the
distance of `evaluation.distance` (paper Eq. 7 by default) and writes into `reports/eval/<benchmark>/`:

| file | what |
|---|---|
| `metrics.json` | Rank-1/3/5/10, mAP, mINP (fractions), query and gallery counts (a DVC metric) |
| `run.json` | what was evaluated: variant, backbone, AFE layers and kernel, profile, distance, data and model md5 |
| `cmc.csv` | the CMC curve, ranks 1..`evaluation.max_rank` (a DVC plot) |
| `ranked_list.png` | six queries with their top 10 gallery images, right matches framed green, wrong red |
| `routing.json`, `routing.png` | the AFE's scale paths for partial (query) and holistic (gallery) images (Figure 4a); |
| | for a variant without adaptive routing, a note saying so |
| `diagnostics.json`, `diagnostics.png` | method diagnostics (`diagnostics`): visibility per part, mask spread, |
| | route variety, the AFE's share, Eq. 7 vs global-only, the no-network floor (needs the mask store; else a note) |

The headline diagnostics also go into `metrics.json` after the ranking metrics (`vis_acc_query/<part>`,
`mask_std/<part>`, `routes_distinct`, `afe_share`, `global_only_rank1`, `floor_rank1`, ...: see
`sanet.evaluation.diagnostics.headline_metrics`).

Every file is written atomically, and the same files plus the metrics (`<benchmark>/rank1`, `<benchmark>/mAP`, ...)
go to one MLflow run of the pipeline's experiment, tagged with the benchmark and the training's pipeline run.

The folder (the stage's DVC output) is a deterministic function of the model file, the data and the parameters:
the same evaluation writes the same bytes. What differs from run to run (the MLflow run ids of the evaluation and
of the training, the pipeline run, the git sha, the time, the extraction speed) goes to the run's tags and metrics
and to the git-ignored sidecar `<out>.provenance.json` beside the folder (`sanet.infra.provenance`), never into it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sanet.config import Params
from sanet.contracts.datasets import MARKER_FILE, PARTIAL_BENCHMARKS
from sanet.contracts.files import EVAL_DIR, MODEL_FILE, TRAIN_DIR, EvalFiles
from sanet.data.benchmarks import BENCHMARKS, build_benchmark
from sanet.infra.atomic import atomic_write
from sanet.infra.errors import EvaluationError

if TYPE_CHECKING:
    from mlflow import ActiveRun

__all__ = ["EvaluateResult", "run_evaluate"]


@dataclass
class EvaluateResult:
    """What an evaluation wrote and measured."""

    benchmark: str
    metrics: dict[str, float]
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None
    seconds: float = 0.0
    images_per_second: float = float("nan")  # the feature extraction's (not in metrics.json: it is run-dependent)

    def summary(self) -> str:
        """One line for the end of a run."""
        m = self.metrics
        return (
            f"{self.benchmark}: Rank-1 {100 * m['rank1']:.1f}%, Rank-5 {100 * m['rank5']:.1f}%, "
            f"mAP {100 * m['mAP']:.1f}%, mINP {100 * m['mINP']:.1f}% ({m['num_query']} queries, "
            f"{m['num_gallery']} gallery; {self.images_per_second:.0f} img/s); results in {self.out_dir}"
            + (f"; MLflow run {self.run_id}" if self.run_id else "")
        )


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EvaluationError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def _write_json(path: Path, data: Any) -> Path:
    return atomic_write(path, lambda handle: handle.write((json.dumps(data, indent=2) + "\n").encode()))


def _cmc_csv(cmc: list[float]) -> str:
    return "rank,cmc\n" + "".join(f"{k},{value:.6f}\n" for k, value in enumerate(cmc, 1))


def _evaluation_params(params: Params, trained: Params) -> Params:
    """What this evaluation ran with: the model's own training settings, the current data and evaluation settings.

    The model file decides the architecture and the input size it was trained at; logging its settings (not
    params.yaml's) keeps an evaluation's MLflow params true to the weights it measured.
    """
    keep = ("profile", "seed", "input", "model", "loss", "train", "augment")
    return params.model_copy(update={name: getattr(trained, name) for name in keep})


def run_evaluate(
    params: Params,
    benchmark: str,
    model_file: str | Path,
    out_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> EvaluateResult:
    """Evaluate `model_file` on `benchmark` under `params.data.root`; write the files above and one MLflow run.

    Raises EvaluationError (unknown benchmark, missing model file, no query with a match), CheckpointError (a model
    file that is not one), BenchmarkError (missing or corrupt data) and TrackingError (unreachable tracking store),
    all before any feature is extracted except the last.
    """
    from sanet.engine.checkpoint import load_model_file
    from sanet.engine.cpu_kernels import describe_cpu_kernels
    from sanet.engine.determinism import threads_during
    from sanet.engine.features import evaluate_benchmark
    from sanet.evaluation.diagnostics.afe import AFEShareMeter
    from sanet.infra.hashing import file_md5, files_md5
    from sanet.infra.provenance import sidecar_path, training_sidecar, write_sidecar
    from sanet.infra.tracking import check_tracking_uri, git_sha, pipeline_run_id, tracking_uri
    from sanet.metrics.ranking import NoValidQueryError

    started = time.perf_counter()
    if benchmark not in BENCHMARKS:
        raise EvaluationError(f"unknown benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    model_file = Path(model_file)
    if not model_file.is_file():
        raise EvaluationError(
            f"no model file at {model_file}: train one with `sanet train` (or `dvc repro train`), which writes "
            f"{TRAIN_DIR / MODEL_FILE}"
        )
    out = Path(out_dir) if out_dir is not None else EVAL_DIR / benchmark
    layout = EvalFiles(out)
    check_tracking_uri(tracking_uri(params))  # an unreachable store fails before the work, not after it
    data = build_benchmark(benchmark, params.data.root)
    torch_device = _device(device)
    model, trained, meta = load_model_file(model_file, map_location=torch_device)
    run_params = _evaluation_params(params, trained)
    query_paths = [r.path for r in data.query]
    data_md5 = files_md5([*query_paths, *(r.path for r in data.gallery)], params.data.root)
    md5 = file_md5(model_file)
    # the training's MLflow run and pipeline run: its sidecar beside the model file (or an older model file's meta)
    trained_by = training_sidecar(model_file, md5)
    run_info: dict[str, Any] = {
        "benchmark": benchmark,
        "synthetic": (Path(params.data.root) / MARKER_FILE).is_file(),
        "variant": trained.model.variant,
        "backbone": trained.model.backbone,
        "profile": trained.profile,
        "afe_layers": trained.model.afe.layers,
        "afe_kernel": trained.model.afe.kernel,
        "triplet_weight": trained.loss.triplet_weight,
        "distance": params.evaluation.distance,
        "rerank": params.evaluation.rerank.enabled,
        "input": [trained.input.height, trained.input.width],
        "data_md5": data_md5,
        "model_file": str(model_file),
        "model_md5": md5,
    }
    provenance: dict[str, Any] = {
        "benchmark": benchmark,
        "model_md5": md5,
        "mlflow_run_id": None,
        "train_run_id": trained_by.get("train_run_id") or meta.get("train_run_id"),
        "pipeline_run": pipeline_run_id(trained_by.get("pipeline_run") or meta.get("pipeline_run")),
        "git_sha": git_sha(),
        "evaluated_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "device": torch_device.type,
        "cpu_kernels": describe_cpu_kernels(),
    }
    # the run spans the work (its duration and system metrics are the evaluation's); a failure marks it FAILED
    with _evaluation_run(run_params, benchmark, run_info, provenance, data_md5) as run:
        try:
            # the training's thread count (CPU features depend on it); the caller's count comes back after it
            with threads_during(run_params.train.threads) as threads, AFEShareMeter(model) as afe_meter:
                result = evaluate_benchmark(model, data, run_params, torch_device, progress=progress)
        except NoValidQueryError as exc:
            raise EvaluationError(f"{benchmark} under {params.data.root}: {exc}") from None
        assert result.distmat is not None and result.ranking is not None
        provenance["threads"] = threads
        metrics: dict[str, float] = {key: round(float(value), 6) for key, value in result.metrics.items()}
        metrics |= {"num_query": result.num_query, "num_gallery": result.num_gallery}
        speed = result.extracted.images_per_second
        provenance["images_per_second"] = round(speed, 1) if np.isfinite(speed) else None

        diagnostics = _diagnostics(params, run_params, data, result, benchmark, model, trained, afe_meter, progress)
        metrics |= _headline_diagnostics(diagnostics)
        figures = [
            atomic_write(layout.cmc, lambda handle: handle.write(_cmc_csv(result.cmc).encode())),
            _write_ranked_list(layout.ranked_list, data, result, benchmark),
            *_write_routing(layout, data, result, benchmark, trained),
            *_write_diagnostics(layout, diagnostics, benchmark),
        ]
        provenance["mlflow_run_id"] = run.info.run_id
        provenance["seconds"] = round(time.perf_counter() - started, 1)
        files = [_write_json(layout.metrics, metrics), _write_json(layout.run, run_info), *figures]
        files.append(write_sidecar(sidecar_path(out), provenance))
        _log_results(benchmark, metrics, speed, threads, files)
    return EvaluateResult(benchmark, metrics, out, files, run.info.run_id, time.perf_counter() - started, speed)


def _write_ranked_list(path: Path, data: Any, result: Any, benchmark: str) -> Path:
    """Six queries and their top 10, each image shown at 128 x 64 (Market-1501's own size, whatever the input)."""
    from sanet.evaluation.ranked_list import write_ranked_lists

    return write_ranked_lists(
        path,
        data.query,
        data.gallery,
        result.distmat,
        result.ranking.valid,
        title=f"{benchmark}: top 10 of {len(data.gallery)} gallery images (green: same identity, red: another)",
    )


def _write_routing(files: EvalFiles, data: Any, result: Any, benchmark: str, trained: Params) -> list[Path]:
    """routing.json and routing.png: the AFE's paths for the adaptive variant; for the others (they take every path,
    or have no AFE) the JSON and the figure say so."""
    from sanet.evaluation.routing import routing_summary, write_routing_note, write_routing_plot

    routing = result.extracted.routing
    if routing is None:
        summary: dict[str, Any] = {
            "adaptive": False,
            "variant": trained.model.variant,
            "note": f"the {trained.model.variant} variant has no adaptive routing (no per-image path to show)",
        }
        title = f"{benchmark}: AFE scale paths (Fig. 4a)"
        return [_write_json(files.routing, summary), write_routing_note(files.routing_figure, summary["note"], title)]
    num_query = result.num_query
    is_query = np.arange(len(routing)) < num_query
    if benchmark in PARTIAL_BENCHMARKS:
        groups = {"partial (query)": is_query, "holistic (gallery)": ~is_query}
    else:
        groups = {"holistic query": is_query, "holistic gallery": ~is_query}
    summary = {"adaptive": True, "variant": trained.model.variant} | routing_summary(routing, groups)
    title = f"{benchmark}: AFE scale paths ({summary['layers']} layers) of partial and holistic images (Fig. 4a)"
    return [_write_json(files.routing, summary), write_routing_plot(files.routing_figure, summary, title)]


def _diagnostics(
    params: Params,
    run_params: Params,
    data: Any,
    result: Any,
    benchmark: str,
    model: torch.nn.Module,
    trained: Params,
    afe_meter: Any,
    progress: bool,
) -> dict[str, Any]:
    """The method diagnostics (`diagnostics.compute_diagnostics`), labels from `params.masks.out_dir`."""
    from sanet.contracts.parts import NUM_PARTS
    from sanet.evaluation.diagnostics.summary import compute_diagnostics
    from sanet.masks.mask_files import MaskStore

    return compute_diagnostics(
        result,
        data.query,
        data.gallery,
        MaskStore(params.masks.out_dir, params.data.root),
        run_params.evaluation,
        branches=tuple(getattr(model, "parts", range(NUM_PARTS))),
        partial=benchmark in PARTIAL_BENCHMARKS,
        variant=trained.model.variant,
        afe=afe_meter,
        progress=progress,
    )


def _headline_diagnostics(diagnostics: dict[str, Any]) -> dict[str, float]:
    """The flat diagnostic numbers for metrics.json, floats rounded to 6 digits."""
    from sanet.evaluation.diagnostics.summary import headline_metrics

    return {
        key: value if isinstance(value, int) else round(float(value), 6)
        for key, value in headline_metrics(diagnostics).items()
    }


def _write_diagnostics(files: EvalFiles, diagnostics: dict[str, Any], benchmark: str) -> list[Path]:
    """diagnostics.json (full detail) and diagnostics.png (one figure of it)."""
    from sanet.evaluation.diagnostics.figure import write_diagnostics_figure

    title = f"{benchmark}: method diagnostics ({diagnostics['variant']}, {diagnostics['num_query']} queries, "
    title += f"{diagnostics['num_gallery']} gallery)"
    return [
        _write_json(files.diagnostics, diagnostics),
        write_diagnostics_figure(files.diagnostics_figure, diagnostics, title),
    ]


@contextlib.contextmanager
def _evaluation_run(
    params: Params, benchmark: str, run_info: dict[str, Any], provenance: dict[str, Any], data_md5: str
) -> Iterator[ActiveRun]:
    """The evaluation's MLflow run, open for the whole evaluation: params, tags (benchmark, model, training run)."""
    from sanet.infra.tracking import model_label, run_tags, start_run

    tags = run_tags(
        params,
        data_md5,
        stage="evaluate",
        extra={
            "benchmark": benchmark,
            "pipeline_run": provenance["pipeline_run"],
            "model_md5": run_info["model_md5"],
            "synthetic": str(run_info["synthetic"]).lower(),
            "cpu_kernels": provenance["cpu_kernels"],
            **({"train_run_id": provenance["train_run_id"]} if provenance["train_run_id"] else {}),
        },
    )
    run_name = f"evaluate {benchmark} · {model_label(params)} ({params.profile})"
    with start_run(params, stage="evaluate", run_name=run_name, tags=tags) as run:
        yield run


def _log_results(benchmark: str, metrics: dict[str, float], speed: float, threads: int, files: list[Path]) -> None:
    """The evaluation's `<benchmark>/...` metrics (and the extraction speed), thread count and files, in its run."""
    import mlflow

    logged = {f"{benchmark}/{key}": float(value) for key, value in metrics.items()}
    if np.isfinite(speed):
        logged[f"{benchmark}/images_per_second"] = float(speed)
    mlflow.log_metrics(logged)
    mlflow.set_tag("threads", str(threads))
    for path in files:
        mlflow.log_artifact(str(path), artifact_path=f"evaluate/{benchmark}")
