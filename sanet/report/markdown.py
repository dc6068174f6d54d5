"""The report as Markdown (`reports/benchmark.md`), section by section:

- Tables 1 and 2 laid out like the paper's (methods as rows, benchmarks as column groups), with the paper's HPNet
  and SANet rows and the difference ours - paper SANet in points. On the synthetic benchmark (any `run.json` says
  `"synthetic": true`) a banner opens the file, and the paper's numbers go to separate "paper reference" tables with no
  difference: they were measured on other images.
- The full metrics (Rank-1/3/5/10, mAP, mINP, query and gallery counts), training, each benchmark's protocol, and the
  provenance of the runs (model, data and code hashes, MLflow run ids, pipeline run).
- Tables 3 and 4 (ablations on Partial-iLIDS-P) from the MLflow tracking store, when at least two settings of a
  table have runs (`sanet.report.ablations.search_ablations` says which runs count).

Only the benchmarks of `data.evaluate` are reported, so that the report depends on the inputs DVC declares; a
benchmark whose folder is missing shows as "not evaluated". The text is deterministic: dates come from the inputs,
never the clock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet import paper_results as paper
from sanet.data.benchmarks import BENCHMARKS, ReIDBenchmark
from sanet.report.ablations import AblationSearch
from sanet.report.formatting import (
    DASH,
    LABELS,
    NOT_EVALUATED,
    benchmark_name,
    percent,
    points_diff,
    published_percent,
)
from sanet.report.inputs import METRICS, Evaluation, Training, is_number, is_synthetic, primary_evaluation

if TYPE_CHECKING:
    from sanet.config import Params


NOT_RUN = "not run (make ablations)"


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


def _link(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _code(value: Any) -> str:
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


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
    header = ["Method"] + [f"{benchmark_name(b)} {LABELS[m]}" for b, m in columns]

    def ours(benchmark: str, metric: str) -> str:
        evaluation = evaluations.get(benchmark)
        return NOT_EVALUATED if evaluation is None else percent(evaluation.metrics[metric])

    def published(
        table: Mapping[str, Mapping[str, float | None]], label: str, keys: Sequence[tuple[str, str]]
    ) -> list[str]:
        return [label] + [published_percent(paper.paper_value(table, b, m)) for b, m in keys]

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
            ["Method"] + [f"{benchmark_name(b)} {LABELS[m]}" for b, m in reference],
            [published(paper.HPNET, "HPNet (paper)", reference), published(paper.SANET, "SANet (paper)", reference)],
        )
    else:
        diff = ["Δ ours − SANet (paper)"]
        for b, m in columns:
            evaluation = evaluations.get(b)
            diff.append(
                points_diff(evaluation.metrics[m] if evaluation else None, paper.paper_value(paper.SANET, b, m))
            )
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
            rows.append([benchmark_name(name), NOT_EVALUATED] + [DASH] * (len(header) - 2))
            continue
        pictures = [
            f"[{label}]({_link(evaluation.folder / file, out_dir)})"
            for label, file in (("ranked list", "ranked_list.png"), ("routing", "routing.png"))
            if (evaluation.folder / file).is_file()
        ]
        speed = evaluation.metrics.get("images_per_second")
        rows.append(
            [
                benchmark_name(name),
                str(int(evaluation.metrics["num_query"])),
                str(int(evaluation.metrics["num_gallery"])),
                *(percent(evaluation.metrics[m]) for m in METRICS),
                DASH if speed is None else f"{speed:.1f}",
                ", ".join(pictures) or DASH,
            ]
        )
    return ["## Full metrics (ours)", "", *_table(header, rows), ""]


def _training_section(training: Training, params: Params, figure: str | None) -> list[str]:
    lines = ["## Training", ""]
    summary = training.summary
    if summary is not None:
        facts = [f"Trained on {benchmark_name(str(summary.get('benchmark', params.data.train)))}"]
        if is_number(summary.get("epochs")):
            facts.append(f"{int(summary['epochs'])} epochs")
        if is_number(summary.get("steps")):
            facts.append(f"{int(summary['steps'])} steps")
        if is_number(summary.get("train_seconds")):
            facts.append(f"{summary['train_seconds']:.1f} s")
        if is_number(summary.get("images_per_second")):
            facts.append(f"{summary['images_per_second']:.1f} images/s")
        lines += [", ".join(facts) + ".", ""]
        blocks = [(label, summary.get(key)) for label, key in (("Untrained", "untrained"), ("Trained", "final"))]
        blocks = [(label, block) for label, block in blocks if isinstance(block, dict)]
        shown = [m for m in METRICS if any(is_number(block.get(m)) for _, block in blocks)]
        rows = [
            [label, *(percent(block[m]) if is_number(block.get(m)) else DASH for m in shown)] for label, block in blocks
        ]
        lines += [
            f"Validation on {benchmark_name(str(summary.get('benchmark', params.data.train)))}'s query/gallery, before "
            "and after training (the untrained network is the baseline that shows the network learned):",
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
            row += [percent(run.metrics.get(m)) for m in metrics]
        if not synthetic:
            row += [published_percent(published.get(m) if published else None) for m in metrics]
            row += [
                points_diff(run.metrics.get(m) if run else None, published.get(m) if published else None)
                for m in metrics
            ]
        row.append(f"`{run.run_id}`" if run else DASH)
        rows.append(row)
    lines = _table(header, rows)
    if synthetic:
        reference = [
            [name, *(published_percent(published.get(m)) for m in metrics)]
            for name, _, published in settings
            if published
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
        f"The model is trained on {benchmark_name(train)}'s training split only; every other benchmark is evaluated "
        "without fine-tuning. AP is the non-interpolated average of the precision at each relevant rank; mINP is the "
        "mean inverse negative penalty.",
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
            f"- **{benchmark_name(name)}** (`{name}`, folder `{cls.dataset_dir}/`): queries `{folders['query']}/`, "
            f"gallery `{folders['gallery']}/`; {rule}; {note}. This run: {size}."
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
        rows = [[benchmark_name(name), *(_code(e.run.get(key)) for key in varying)] for name, e in evaluations.items()]
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
    synthetic = is_synthetic(evaluations)
    benchmarks = list(params.data.evaluate)
    out_dir = Path(out).parent
    primary = primary_evaluation(evaluations, params)
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
