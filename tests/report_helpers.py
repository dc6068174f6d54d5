"""Inputs and readers for the tests of `sanet report` (tests/test_report.py, and tests/test_diagnostics.py for the
report's diagnostics): hand-written evaluation folders, the report run on them, its Markdown tables."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from paths import PARAMS_FILE

from sanet.config import Params, load_params
from sanet.report.stage import run_report

DATA_MD5 = {"partial_ilids_p": "d" * 32}

# Known inputs (fractions) and what the report must show for them (percent, one decimal).
REAL = {
    "partial_reid": {"rank1": 0.9012, "rank3": 0.95, "rank5": 0.97, "rank10": 0.99, "mAP": 0.8},
    "partial_ilids_p": {"rank1": 0.7, "rank3": 0.8404, "rank5": 0.9, "rank10": 0.95, "mAP": 0.77349},
    "market1501": {"rank1": 0.5, "rank3": 0.6, "rank5": 0.7, "rank10": 0.8, "mAP": 0.25},
    "partial_reid_cropped": {"rank1": 0.6, "rank3": 0.7, "rank5": 0.8, "rank10": 0.9, "mAP": 0.55},
}


def report_params(tmp_path: Path, *overrides: str) -> Params:
    """params.yaml tracking to `<tmp_path>/m.db` (the `workdir` fixture's store), artifacts beside it."""
    return load_params(
        PARAMS_FILE,
        [
            f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
            "tracking.system_metrics=false",
            f"tracking.artifact_location={tmp_path / 'artifacts'}",
            *overrides,
        ],
    )


def write_eval(
    eval_dir: Path, name: str, values: Mapping[str, float], synthetic: bool = False, pipeline_run: str | None = None
) -> None:
    """`<eval_dir>/<name>/{metrics.json,run.json,cmc.csv}` and its sidecar, as `sanet evaluate` writes them."""
    folder = eval_dir / name
    folder.mkdir(parents=True)
    metrics = {**values, "mINP": values["mAP"] / 2, "num_query": 10, "num_gallery": 20}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    run = {
        "benchmark": name,
        "synthetic": synthetic,
        "variant": "sanet",
        "backbone": "resnet18",
        "profile": "demo",
        "afe_layers": 5,
        "afe_kernel": 3,
        "triplet_weight": 0.1,
        "distance": "part",
        "data_md5": DATA_MD5.get(name, name[:1] * 32),
        "model_file": "outputs/train/model.pt",
        "model_md5": "a" * 32,
    }
    (folder / "run.json").write_text(json.dumps(run))
    # the run-dependent facts: the sidecar beside the folder (sanet.infra.provenance), as `sanet evaluate` writes it
    provenance = {"model_md5": "a" * 32, "mlflow_run_id": f"eval-{name}", "pipeline_run": pipeline_run}
    (eval_dir / f"{name}.provenance.json").write_text(json.dumps(provenance))
    curve = [values["rank1"], values["rank3"], values["rank3"], values["rank5"], values["rank5"], values["rank10"]]
    (folder / "cmc.csv").write_text("rank,cmc\n" + "".join(f"{i},{v}\n" for i, v in enumerate(curve, 1)))


def write_report(tmp_path: Path, params: Params, ablations: bool = True):
    """`sanet report` on `<tmp_path>/eval` and `<tmp_path>/train`, writing under `<tmp_path>/reports`."""
    return run_report(
        params,
        eval_dir=tmp_path / "eval",
        train_dir=tmp_path / "train",
        out=tmp_path / "reports" / "benchmark.md",
        figures_dir=tmp_path / "reports" / "figures",
        ablations=ablations,
    )


def report_section(markdown: str, heading: str) -> str:
    """The text of the section starting with `heading` up to the next heading of the same or a higher level."""
    start = markdown.index(heading)
    level = heading.split(" ")[0]
    ends = [markdown.find("\n" + h + " ", start + 1) for h in ("#" * n for n in range(1, len(level) + 1))]
    ends = [end for end in ends if end != -1]
    return markdown[start : min(ends) if ends else len(markdown)]


def table_rows(section: str) -> dict[str, list[str]]:
    """The table rows of a section keyed by their first cell (the header row too, under its first cell)."""
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|:"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows
