"""The report as Markdown (`reports/benchmark.md`), section by section:

- Tables 1 and 2 laid out like the paper's (methods as rows, benchmarks as column groups), with the paper's HPNet
  and SANet rows and the difference ours - paper SANet in points. On the synthetic benchmark (any `run.json` says
  `"synthetic": true`) a banner opens the file, and the paper's numbers go to separate "paper reference" tables with no
  difference: they were measured on other images.
  Below "Ours", every benchmark gets the no-network floor (a colour histogram of the person pixels, ranked under the
  same protocol) and the Rank-1 of chance, from the evaluation's `diagnostics.json` (a dash where there is none).
- The full metrics (Rank-1/3/5/10, mAP, mINP, query and gallery counts), the method diagnostics (visibility
  accuracy per part, mask variation, AFE routes and share, Eq. 7 vs global-only vs the floor), training, each
  benchmark's protocol, and the provenance of the results (model, settings, model and data hashes).
- Tables 3 and 4 (ablations on Partial-iLIDS-P) from the MLflow tracking store, when at least two settings of a
  table have runs (`sanet.report.ablations.search_ablations` says which runs count).

Only the benchmarks of `data.evaluate` are reported, so that the report depends on the inputs DVC declares; a
benchmark whose folder is missing shows as "not evaluated". The text is deterministic, and a function of what the
results are, never of how a run went: no date, duration, speed, git sha or run id (`reports/benchmark.md` is a DVC
output; they go to the report's MLflow run and its sidecar, `sanet.report.stage`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet.contracts.results import (
    METRICS,
    Evaluation,
    Training,
    diagnostic,
    is_number,
    is_synthetic,
    primary_evaluation,
)
from sanet.data.benchmarks import BENCHMARKS, ReIDBenchmark
from sanet.report import paper_results as paper
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

if TYPE_CHECKING:
    from sanet.config import Params


NOT_RUN = "not run (make ablations)"
FLOOR_ROW = "No-network floor (colour histogram)"
CHANCE_ROW = "Chance (random ranking)"
_DIAGNOSED_PARTS: tuple[tuple[str, str], ...] = (
    ("head", "Head"),
    ("upper_body", "Upper body"),
    ("lower_body", "Lower body"),
    ("feet", "Feet"),
    ("global", "Global"),
)


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
    "model_file",
    "model_md5",
    "data_md5",
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

    def floor_rows() -> list[list[str]]:
        """The colour-histogram floor and chance (Rank-1 only) under the same protocol, from diagnostics.json."""
        floor = [FLOOR_ROW] + [_number(diagnostic(evaluations.get(b), "floor", m), percent) for b, m in columns]
        chance = [CHANCE_ROW] + [
            _number(diagnostic(evaluations.get(b), "chance_rank1"), percent) if m == "rank1" else DASH
            for b, m in columns
        ]
        return [floor, chance]

    lines = [f"## {title}", ""]
    if synthetic:
        lines += _table(header, [["Ours (synthetic data)"] + [ours(b, m) for b, m in columns], *floor_rows()])
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
            *floor_rows(),
        ]
        lines += _table(header, rows)
    return [*lines, ""]


def _benchmark_rows(
    evaluations: Mapping[str, Evaluation],
    benchmarks: Sequence[str],
    columns: int,
    cells: Callable[[Evaluation], list[str]],
) -> list[list[str]]:
    """One row per benchmark: its name, then `cells(evaluation)`, or "not evaluated" and dashes over `columns`."""
    rows = []
    for name in benchmarks:
        evaluation = evaluations.get(name)
        rest = cells(evaluation) if evaluation is not None else [NOT_EVALUATED] + [DASH] * (columns - 2)
        rows.append([benchmark_name(name), *rest])
    return rows


def _full_metrics_section(evaluations: Mapping[str, Evaluation], benchmarks: Sequence[str], out_dir: Path) -> list[str]:
    header = ["Benchmark", "Queries", "Gallery", *(LABELS[m] for m in METRICS), "Pictures"]

    def cells(evaluation: Evaluation) -> list[str]:
        pictures = [
            f"[{label}]({_link(evaluation.folder / file, out_dir)})"
            for label, file in (("ranked list", "ranked_list.png"), ("routing", "routing.png"))
            if (evaluation.folder / file).is_file()
        ]
        return [
            str(int(evaluation.metrics["num_query"])),
            str(int(evaluation.metrics["num_gallery"])),
            *(percent(evaluation.metrics[m]) for m in METRICS),
            ", ".join(pictures) or DASH,
        ]

    rows = _benchmark_rows(evaluations, benchmarks, len(header), cells)
    return ["## Full metrics (ours)", "", *_table(header, rows), ""]


def _number(value: Any, show: Callable[[float], str]) -> str:
    """`show(value)` for a finite number, a dash for anything else (missing, None, not a number)."""
    return show(float(value)) if is_number(value) else DASH


def _routes(evaluation: Evaluation, role: str) -> str:
    """`distinct (top share%)` of the route group of `role` (query or gallery), a dash without routes."""
    groups = diagnostic(evaluation, "routing", "groups")
    if not isinstance(groups, dict):
        return DASH
    group = next((g for g in groups.values() if isinstance(g, dict) and g.get("role") == role), None)
    if group is None or not is_number(group.get("distinct_routes")) or not is_number(group.get("top_route_share")):
        return DASH
    return f"{int(group['distinct_routes'])} ({percent(group['top_route_share'])}%)"


def _diagnostics_section(evaluations: Mapping[str, Evaluation], benchmarks: Sequence[str], out_dir: Path) -> list[str]:
    """Per benchmark: visibility accuracy of the queries and mask variation per part, the AFE's routes and share,
    and Rank-1 of the model's distance, the global branch alone, the colour floor and chance (`diagnostics.json`)."""
    parts = [label for _, label in _DIAGNOSED_PARTS]

    def part_rows(keys: Sequence[str], leaf: str, show: Callable[[float], str]) -> list[list[str]]:
        def cells(evaluation: Evaluation) -> list[str]:
            return [_number(diagnostic(evaluation, *keys, part, leaf), show) for part, _ in _DIAGNOSED_PARTS]

        return _benchmark_rows(evaluations, benchmarks, len(parts) + 1, cells)

    lines = [
        "## Method diagnostics",
        "",
        "What the method's mechanisms do on each benchmark (`diagnostics.json` and `diagnostics.png` of each "
        "evaluation; a dash where an evaluation has none, or a variant lacks the part or the module).",
        "",
        "Visibility accuracy of the queries (%): predicted visibility (Eq. 5) against the part-mask labels.",
        "",
        *_table(["Benchmark", *parts], part_rows(("visibility", "query"), "accuracy", percent)),
        "",
        "Mask variation: per part, the mean over mask cells of the standard deviation of the predicted probability "
        "across images (0: the same mask for every image).",
        "",
        *_table(["Benchmark", *parts], part_rows(("masks", "all"), "std", lambda v: f"{v:.4f}")),
        "",
        "AFE and distances: distinct routes of the queries and of the gallery (with the most common route's share; "
        "partial queries against holistic gallery on the partial benchmarks), the AFE's share of the features "
        "(mean ||AFE(x) − x|| / ||x|| over images), and Rank-1 (%) of our distance (Eq. 7 unless "
        "`evaluation.distance` says otherwise), of the global branch alone, of the no-network floor and of chance.",
        "",
    ]
    header = [
        "Benchmark",
        "Routes (queries)",
        "Routes (gallery)",
        "AFE share",
        "Ours Rank-1",
        "Global-only Rank-1",
        "Floor Rank-1",
        "Chance Rank-1",
        "Figure",
    ]

    def cells(evaluation: Evaluation) -> list[str]:
        figure = evaluation.folder / "diagnostics.png"
        return [
            _routes(evaluation, "query"),
            _routes(evaluation, "gallery"),
            _number(diagnostic(evaluation, "afe", "share"), lambda v: f"{v:.3f}"),
            _number(diagnostic(evaluation, "ranking", "model", "rank1"), percent),
            _number(diagnostic(evaluation, "ranking", "global_only", "rank1"), percent),
            _number(diagnostic(evaluation, "floor", "rank1"), percent),
            _number(diagnostic(evaluation, "chance_rank1"), percent),
            f"[diagnostics]({_link(figure, out_dir)})" if figure.is_file() else DASH,
        ]

    return [*lines, *_table(header, _benchmark_rows(evaluations, benchmarks, len(header), cells)), ""]


def _training_section(training: Training, params: Params, figure: str | None) -> list[str]:
    lines = ["## Training", ""]
    summary = training.summary
    if summary is not None:
        facts = [f"Trained on {benchmark_name(str(summary.get('benchmark', params.data.train)))}"]
        if is_number(summary.get("epochs")):
            facts.append(f"{int(summary['epochs'])} epochs")
        if is_number(summary.get("steps")):
            facts.append(f"{int(summary['steps'])} steps")
        lines += [", ".join(facts) + ".", ""]
        blocks: list[tuple[str, Any]] = [
            (label, summary.get(key)) for label, key in (("Untrained", "untrained"), ("Trained", "final"))
        ]
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
    """The report as Markdown: deterministic for the same inputs (nothing run-dependent: module docstring)."""
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
        f"{_code(run.get('afe_kernel'))}, distance {_code(run.get('distance'))}.",
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
    lines += _diagnostics_section(evaluations, benchmarks, out_dir)
    if training is not None:
        figure = _link(figures["training"], out_dir) if "training" in figures else None
        lines += _training_section(training, params, figure)
    lines += _ablation_sections(params, search, synthetic)
    lines += _protocol_section(params, evaluations)
    lines += _provenance_section(evaluations)
    return "\n".join(lines).rstrip("\n") + "\n"
