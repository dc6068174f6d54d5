"""The `evaluate` stage: one trained model on one benchmark, with everything a researcher looks at afterwards.

`run_evaluate` loads the model file (architecture and input size from the file, so it stays valid after params.yaml
changes), extracts query and gallery features in batches (no gradients; AMP and channels-last on CUDA), ranks with the
distance of `evaluation.distance` (paper Eq. 7 by default) and writes into `reports/eval/<benchmark>/`:

| file | what |
|---|---|
| `metrics.json` | Rank-1/3/5/10, mAP, mINP (fractions), query and gallery counts, extraction speed (a DVC metric) |
| `run.json` | provenance: variant, backbone, AFE layers and kernel, profile, data and model md5, git sha, MLflow run |
| `cmc.csv` | the CMC curve, ranks 1..`evaluation.max_rank` (a DVC plot) |
| `ranked_list.png` | six queries with their top 10 gallery images, right matches framed green, wrong red |
| `routing.json`, `routing.png` | the AFE's scale paths for partial (query) and holistic (gallery) images (Figure 4a) |

Every file is written atomically, and the same files plus the metrics (`<benchmark>/rank1`, `<benchmark>/mAP`, ...)
go to one MLflow run of the pipeline's experiment, tagged with the benchmark and the training's pipeline run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sanet.atomic import atomic_write
from sanet.config import Params
from sanet.data.benchmarks import BENCHMARKS, build_benchmark
from sanet.data.synthetic import MARKER_FILE
from sanet.errors import EvaluationError

__all__ = ["EVAL_DIR", "EvaluateResult", "model_md5", "run_evaluate"]

EVAL_DIR = Path("reports/eval")
PARTIAL_BENCHMARKS = frozenset({"partial_reid", "partial_reid_cropped", "partial_ilids_p", "partial_ilids_o"})
_CHUNK = 1 << 20


@dataclass
class EvaluateResult:
    """What an evaluation wrote and measured."""

    benchmark: str
    metrics: dict[str, float]
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the end of a run."""
        m = self.metrics
        return (
            f"{self.benchmark}: Rank-1 {100 * m['rank1']:.1f}%, Rank-5 {100 * m['rank5']:.1f}%, "
            f"mAP {100 * m['mAP']:.1f}%, mINP {100 * m['mINP']:.1f}% ({m['num_query']} queries, "
            f"{m['num_gallery']} gallery; {m['images_per_second']:.0f} img/s); results in {self.out_dir}"
            + (f"; MLflow run {self.run_id}" if self.run_id else "")
        )


def model_md5(path: str | Path) -> str:
    """MD5 of a model file: which weights an evaluation used."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
    from sanet.engine.features import evaluate_benchmark
    from sanet.metrics.ranking import NoValidQueryError
    from sanet.tracking import check_tracking_uri, files_md5, git_sha, tracking_uri

    started = time.perf_counter()
    if benchmark not in BENCHMARKS:
        raise EvaluationError(f"unknown benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    model_file = Path(model_file)
    if not model_file.is_file():
        raise EvaluationError(
            f"no model file at {model_file}: train one with `sanet train` (or `dvc repro train`), which writes "
            "outputs/train/model.pt"
        )
    out = Path(out_dir) if out_dir is not None else EVAL_DIR / benchmark
    check_tracking_uri(tracking_uri(params))  # an unreachable store fails before the work, not after it
    data = build_benchmark(benchmark, params.data.root)
    torch_device = _device(device)
    model, trained, meta = load_model_file(model_file, map_location=torch_device)
    run_params = _evaluation_params(params, trained)
    try:
        result = evaluate_benchmark(model, data, run_params, torch_device, progress=progress)
    except NoValidQueryError as exc:
        raise EvaluationError(f"{benchmark} under {params.data.root}: {exc}") from None
    assert result.distmat is not None and result.ranking is not None

    metrics: dict[str, float] = {key: round(float(value), 6) for key, value in result.metrics.items()}
    metrics |= {
        "num_query": result.num_query,
        "num_gallery": result.num_gallery,
        "images_per_second": round(result.extracted.images_per_second, 1),
    }
    query_paths = [r.path for r in data.query]
    data_md5 = files_md5([*query_paths, *(r.path for r in data.gallery)], params.data.root)
    from sanet.tracking import pipeline_run_id

    pipeline_run = pipeline_run_id(meta.get("pipeline_run"))
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
        "model_md5": model_md5(model_file),
        "git_sha": git_sha(),
        "mlflow_run_id": None,
        "train_run_id": meta.get("train_run_id"),
        "pipeline_run": pipeline_run,
        "evaluated_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }

    figures = [
        atomic_write(out / "cmc.csv", lambda handle: handle.write(_cmc_csv(result.cmc).encode())),
        _write_ranked_list(out / "ranked_list.png", data, result, benchmark),
        *_write_routing(out, data, result, benchmark, trained),
    ]

    def write_results(run_id: str | None) -> list[Path]:
        run_info["mlflow_run_id"] = run_id
        return [_write_json(out / "metrics.json", metrics), _write_json(out / "run.json", run_info), *figures]

    run_id, files = _log_to_mlflow(run_params, benchmark, metrics, run_info, write_results, data_md5)
    return EvaluateResult(benchmark, metrics, out, files, run_id, time.perf_counter() - started)


def _write_ranked_list(path: Path, data: Any, result: Any, benchmark: str) -> Path:
    """Six queries and their top 10, each image shown at 128 x 64 (Market-1501's own size, whatever the input)."""
    from sanet.ranked_list import write_ranked_lists

    return write_ranked_lists(
        path,
        data.query,
        data.gallery,
        result.distmat,
        result.ranking.valid,
        title=f"{benchmark}: top 10 of {len(data.gallery)} gallery images (green: same identity, red: another)",
    )


def _write_routing(out: Path, data: Any, result: Any, benchmark: str, trained: Params) -> list[Path]:
    """routing.json always; routing.png for the adaptive variant (the others take every path, or have no AFE)."""
    from sanet.routing import routing_summary, write_routing_plot

    routing = result.extracted.routing
    if routing is None:
        summary: dict[str, Any] = {
            "adaptive": False,
            "variant": trained.model.variant,
            "note": f"the {trained.model.variant} variant has no adaptive routing (no per-image path to show)",
        }
        return [_write_json(out / "routing.json", summary)]
    num_query = result.num_query
    is_query = np.arange(len(routing)) < num_query
    if benchmark in PARTIAL_BENCHMARKS:
        groups = {"partial (query)": is_query, "holistic (gallery)": ~is_query}
    else:
        groups = {"holistic query": is_query, "holistic gallery": ~is_query}
    summary = {"adaptive": True, "variant": trained.model.variant} | routing_summary(routing, groups)
    title = f"{benchmark}: AFE scale paths ({summary['layers']} layers) of partial and holistic images (Fig. 4a)"
    return [_write_json(out / "routing.json", summary), write_routing_plot(out / "routing.png", summary, title)]


def _log_to_mlflow(
    params: Params,
    benchmark: str,
    metrics: dict[str, float],
    run_info: dict[str, Any],
    write_results: Callable[[str | None], list[Path]],
    data_md5: str,
) -> tuple[str, list[Path]]:
    """One MLflow run for this evaluation: params, `<benchmark>/...` metrics, tags, and the files as artifacts.

    The result files are written inside the run (`write_results(run_id)`), so run.json names it, and a failure
    while writing them marks the run FAILED.
    """
    import mlflow

    from sanet.tracking import model_label, run_tags, start_run

    tags = run_tags(
        params,
        data_md5,
        stage="evaluate",
        extra={
            "benchmark": benchmark,
            "pipeline_run": run_info["pipeline_run"],
            "model_md5": run_info["model_md5"],
            "synthetic": str(run_info["synthetic"]).lower(),
            **({"train_run_id": run_info["train_run_id"]} if run_info["train_run_id"] else {}),
        },
    )
    run_name = f"evaluate {benchmark} · {model_label(params)} ({params.profile})"
    with start_run(params, stage="evaluate", run_name=run_name, tags=tags) as run:
        mlflow.log_metrics({f"{benchmark}/{key}": float(value) for key, value in metrics.items()})
        files = write_results(run.info.run_id)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path=f"evaluate/{benchmark}")
        return run.info.run_id, files
