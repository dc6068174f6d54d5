"""The `report` stage (`run_report`): reads the inputs, searches the ablation runs, renders the Markdown, the
terminal table and the figures, then writes them atomically inside one MLflow run (stage `report`) that logs them
as artifacts with the headline metrics.

The files are DVC outputs and hold nothing run-dependent (`sanet.report.markdown`); the report's MLflow run, its
pipeline run and the MLflow runs of the ablations it shows go to the run's tags and to the git-ignored sidecar
`<out stem>.provenance.json` (`reports/benchmark.provenance.json`, `sanet.infra.provenance`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from sanet.contracts.results import METRICS, is_synthetic, load_evaluations, load_training, primary_evaluation
from sanet.infra.atomic import atomic_write
from sanet.report.ablations import ABLATION_BENCHMARK, AblationSearch, search_ablations
from sanet.report.figures import render_figures
from sanet.report.markdown import render_markdown
from sanet.report.terminal import render_terminal_table

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

    from sanet.config import Params


__all__ = ["ReportResult", "run_report"]


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
    inputs, then opens one MLflow run (stage `report`) for the work: it searches MLflow for the ablation runs when
    `ablations`, renders everything, writes the files atomically and logs them as artifacts with the headline
    metrics (`<benchmark>/rank1`, ...). A `training.png` left from an earlier report is removed when there is no
    history.

    Raises:
        ReportError: missing or malformed inputs (the message names the file and what to run).
        TrackingError: the tracking store cannot be used.
    """
    import mlflow

    from sanet.infra.provenance import read_sidecar, sidecar_path, write_sidecar
    from sanet.infra.tracking import check_tracking_uri, log_file, pipeline_run_id, run_tags, start_run, tracking_uri

    uri = tracking_uri(params)
    check_tracking_uri(uri)
    out, figures_dir = Path(out), Path(figures_dir)
    table_path = out.with_suffix(".txt")
    model_file = f"{params.train.out_dir}/model.pt"
    evaluations = load_evaluations(Path(eval_dir), params.data.evaluate, model_file)
    training = load_training(Path(train_dir))
    synthetic = is_synthetic(evaluations)
    primary = primary_evaluation(evaluations, params)
    trained_on = evaluations.get(params.data.train)
    extra = {
        "benchmarks": ",".join(evaluations),
        "synthetic": str(synthetic).lower(),
        "model_md5": str(primary.run.get("model_md5") or ""),
    }
    # SANET_PIPELINE_RUN when set, else the pipeline run of the evaluations (the model's), as the other stages do.
    # (the evaluations' sidecars name it; an older run.json held it)
    evaluated = {name: read_sidecar(sidecar_path(e.folder), e.run.get("model_md5")) for name, e in evaluations.items()}
    inherited = [
        str(value)
        for e in (primary, *evaluations.values())
        if (value := evaluated[e.benchmark].get("pipeline_run") or e.run.get("pipeline_run"))
    ]
    extra["pipeline_run"] = pipeline_run_id(str(inherited[0]) if inherited else None)
    tags = run_tags(
        params, data_md5=str(trained_on.run.get("data_md5") or "") if trained_on else "", stage="report", extra=extra
    )
    # the run spans the work (the ablation search, the figures, the files); a failure marks it FAILED
    with start_run(params, stage="report", run_name=f"report ({params.profile})", tags=tags) as run:
        if ablations:
            search = search_ablations(params, uri, evaluations.get(ABLATION_BENCHMARK))
        else:
            search = AblationSearch(skipped="`sanet report --no-ablations` was given")
        rendered = render_figures(evaluations, training, synthetic)
        figure_paths = {name: figures_dir / f"{name}.png" for name in rendered}
        markdown = render_markdown(params, evaluations, training, search, out, figure_paths)
        terminal = render_terminal_table(params, evaluations)
        ablation_runs = {"/".join(map(str, key)): found.run_id for key, found in sorted(search.runs.items())}
        written = []
        for name in ("cmc", "training", "comparison"):
            if name in rendered:
                data = rendered[name]
                # data=data binds this figure's bytes (ruff B023); mypy cannot infer such a lambda from its context
                write = cast("Callable[[BinaryIO], object]", lambda handle, data=data: handle.write(data))
                written.append(atomic_write(figure_paths[name], write))
        if "training" not in rendered:
            (figures_dir / "training.png").unlink(missing_ok=True)
        atomic_write(out, lambda handle: handle.write(markdown.encode("utf-8")))
        atomic_write(table_path, lambda handle: handle.write((terminal + "\n").encode("utf-8")))
        mlflow.log_metrics(
            {f"{name}/{metric}": e.metrics[metric] for name, e in evaluations.items() for metric in METRICS}
        )
        sidecar = write_sidecar(
            sidecar_path(out),
            {
                "mlflow_run_id": run.info.run_id,
                "pipeline_run": extra["pipeline_run"],
                "model_md5": extra["model_md5"],
                "evaluation_run_ids": {name: found.get("mlflow_run_id") for name, found in evaluated.items()},
                "ablation_run_ids": ablation_runs,
            },
        )
        if ablation_runs:
            mlflow.set_tag("ablation_runs", ",".join(f"{k}={v}" for k, v in ablation_runs.items()))
        log_file(out, "report")
        log_file(table_path, "report")
        log_file(sidecar, "report")
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
