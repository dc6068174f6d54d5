"""sanet.report: the paper-comparison tables against known metrics, input checks, the ablation search in MLflow,
byte-identical outputs, and the report's own MLflow run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag
from report_helpers import REAL, report_params, report_section, table_rows, write_eval, write_report

from sanet.config import Params
from sanet.infra.errors import ReportError
from sanet.infra.tracking import flat_params


def _write_training(train_dir: Path) -> None:
    train_dir.mkdir(parents=True)
    summary = {
        "benchmark": "market1501",
        "variant": "sanet",
        "epochs": 3,
        "steps": 30,
        "final": {"rank1": 0.5, "mAP": 0.25, "mINP": 0.1},
        "untrained": {"rank1": 0.05, "mAP": 0.02, "mINP": 0.01},
    }
    (train_dir / "metrics.json").write_text(json.dumps(summary))
    (train_dir / "history.csv").write_text(
        "epoch,step,lr,loss,id,triplet,focal,temperature,rank1,mAP\n"
        "1,10,0.02,5.0,4.0,0.3,0.7,1.0,,\n"
        "2,20,0.01,3.0,2.5,0.2,0.3,1.0,0.3,0.15\n"
        "3,30,0.001,2.0,1.6,0.1,0.3,1.0,0.5,0.25\n"
    )


# ---- tables against known inputs -------------------------------------------------------------------------------


def test_real_data_tables_show_ours_the_paper_and_the_difference(workdir: Path) -> None:
    for name, values in REAL.items():
        write_eval(workdir / "eval", name, values)
    result = write_report(workdir, report_params(workdir))
    markdown = result.path.read_text()

    assert not result.synthetic
    assert markdown.startswith("# SANet benchmark report")
    assert "Synthetic" not in markdown and "Paper reference" not in markdown

    table1 = table_rows(report_section(markdown, "## Table 1"))
    assert table1["Method"] == [
        *(
            f"{b} {m}"
            for b in ("Partial-REID", "Partial-iLIDS-O", "Partial-iLIDS-P")
            for m in ("Rank-1", "Rank-3", "mAP")
        ),
        "Partial-REID (cropped) Rank-1",
        "Partial-REID (cropped) Rank-3",
        "Partial-REID (cropped) mAP",
    ]
    assert table1["HPNet (paper)"] == ["85.7", "–", "81.8", "72.0", "–", "58.9", "68.9", "80.7", "72.2", "–", "–", "–"]
    assert (
        table1["SANet (paper)"] == ["88.7", "92.3", "81.5", "84.9", "89.1", "86.5", "74.8", "84.0", "77.3"] + ["–"] * 3
    )
    not_evaluated = ["not evaluated"] * 3
    assert table1["Ours"] == ["90.1", "95.0", "80.0", *not_evaluated, "70.0", "84.0", "77.3", "60.0", "70.0", "55.0"]
    assert (
        table1["Δ ours − SANet (paper)"] == ["+1.4", "+2.7", "-1.5", "–", "–", "–", "-4.8", "+0.0", "+0.0"] + ["–"] * 3
    )

    table2 = table_rows(report_section(markdown, "## Table 2"))
    assert table2["HPNet (paper)"] == ["–"] * 4
    assert table2["SANet (paper)"] == ["93.7", "80.1", "85.5", "67.1"]
    assert table2["Ours"] == ["50.0", "25.0", "not evaluated", "not evaluated"]
    assert table2["Δ ours − SANet (paper)"] == ["-43.7", "-55.1", "–", "–"]

    full = table_rows(report_section(markdown, "## Full metrics"))
    assert full["Partial-REID"][:8] == ["10", "20", "90.1", "95.0", "97.0", "99.0", "80.0", "40.0"]
    assert full["DukeMTMC-reID"][0] == "not evaluated"

    assert result.table_path.read_text() == result.terminal_table + "\n"
    lines = result.terminal_table.splitlines()
    assert lines[0].startswith("Data: the real benchmarks")
    assert lines[1].split() == ["Benchmark", "Rank-1", "Rank-5", "mAP", "mINP", "Paper", "R-1", "Paper", "mAP"]
    market = next(line for line in lines if line.startswith("Market-1501"))
    assert market.split()[1:] == ["50.0", "70.0", "25.0", "12.5", "93.7", "80.1"]
    cropped = next(line for line in lines if line.startswith("Partial-REID (cropped)"))
    assert cropped.split()[-2:] == ["–", "–"]
    assert lines[-1] == "not evaluated: dukemtmc, partial_ilids_o"

    # evaluate-only: no training section, no training figure
    assert "## Training" not in markdown
    assert sorted(p.name for p in result.figures) == ["cmc.png", "comparison.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.figures)
    assert "[ranked list]" not in markdown  # no pictures were written by the fake evaluation


def test_synthetic_data_gets_a_banner_and_paper_numbers_apart(workdir: Path) -> None:
    for name, values in REAL.items():
        write_eval(workdir / "eval", name, values, synthetic=name == "market1501")
    result = write_report(workdir, report_params(workdir))
    markdown = result.path.read_text()

    assert result.synthetic
    assert markdown.startswith("> **Synthetic data: not comparable with the paper.**")
    assert "Δ" not in markdown
    table1 = report_section(markdown, "## Table 1")
    ours, reference = table1.split("Paper reference")
    assert table_rows(ours)["Ours (synthetic data)"][:3] == ["90.1", "95.0", "80.0"]
    assert "88.7" not in ours and "SANet (paper)" not in ours
    assert table_rows(reference)["SANet (paper)"] == [
        "88.7",
        "92.3",
        "81.5",
        "84.9",
        "89.1",
        "86.5",
        "74.8",
        "84.0",
        "77.3",
    ]
    assert result.terminal_table.splitlines()[0].startswith("Data: the project's synthetic benchmark")


# ---- inputs that must be refused ---------------------------------------------------------------------------


def test_missing_eval_dir_is_a_report_error(workdir: Path) -> None:
    with pytest.raises(ReportError, match=r"no evaluation results in .*eval.*dvc repro"):
        write_report(workdir, report_params(workdir))
    assert not (workdir / "reports").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"rank1": 57.0}', "fractions in"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_malformed_metrics_name_the_file(workdir: Path, content: str, problem: str) -> None:
    write_eval(workdir / "eval", "market1501", REAL["market1501"])
    bad = workdir / "eval" / "market1501" / "metrics.json"
    bad.write_text(content)
    with pytest.raises(ReportError) as error:
        write_report(workdir, report_params(workdir))
    assert str(bad) in str(error.value) and problem in str(error.value)


def test_a_decreasing_cmc_curve_is_refused(workdir: Path) -> None:
    write_eval(workdir / "eval", "market1501", REAL["market1501"])
    (workdir / "eval" / "market1501" / "cmc.csv").write_text("rank,cmc\n1,0.5\n2,0.4\n")
    with pytest.raises(ReportError, match=r"cmc\.csv, line 3: the CMC curve decreases"):
        write_report(workdir, report_params(workdir))


# ---- ablations from the tracking store -------------------------------------------------------------------------


def _fake_evaluate_run(
    client: mlflow.MlflowClient,
    experiment: str,
    params: Params,
    metrics: Mapping[str, float],
    start: int,
    profile: str = "demo",
) -> str:
    tags = {"stage": "evaluate", "benchmark": "partial_ilids_p", "profile": profile, "data_md5": "d" * 32}
    run = client.create_run(experiment, start_time=start, tags=tags)
    client.log_batch(
        run.info.run_id,
        params=[Param(k, str(v)) for k, v in flat_params(params).items()],
        metrics=[Metric(f"partial_ilids_p/{k}", v, start, 0) for k, v in metrics.items()],
        tags=[RunTag("variant", params.model.variant)],
    )
    client.set_terminated(run.info.run_id, "FINISHED", end_time=start + 1)
    return run.info.run_id


def test_ablation_tables_come_from_matching_mlflow_runs(workdir: Path) -> None:
    params = report_params(workdir)
    write_eval(workdir / "eval", "partial_ilids_p", REAL["partial_ilids_p"])
    client = mlflow.MlflowClient(params.tracking.uri)
    experiment = client.create_experiment("ablation", artifact_location=str(workdir / "artifacts"))
    scores = {"rank1": 0.5, "rank3": 0.6, "rank5": 0.7, "mAP": 0.4}

    def run(overrides: list[str], rank1: float, start: int, profile: str = "demo") -> str:
        return _fake_evaluate_run(
            client, experiment, report_params(workdir, *overrides), {**scores, "rank1": rank1}, start, profile
        )

    hpnet = run(["model.variant=hpnet"], 0.20, start=2_000)
    glob = run(["model.variant=global", "data.workers=0", "evaluation.batch_size=7"], 0.30, start=2_000)
    layers3 = run(["model.afe.layers=3"], 0.40, start=2_000)
    kernel1 = run(["model.afe.kernel=1"], 0.45, start=2_000)
    ignored = [
        run(["model.variant=hpnet"], 0.10, start=1_000),  # an older run of a setting
        run(["model.variant=fixed_fe"], 0.90, start=3_000, profile="paper"),  # another profile
        run(["model.variant=fixed_fe", "train.epochs=3"], 0.90, start=3_000),  # another training
        run(["model.afe.layers=7", "seed=1"], 0.90, start=3_000),  # another seed
    ]

    markdown = write_report(workdir, params).path.read_text()
    table3 = table_rows(report_section(markdown, "### Table 3"))
    paper = ["68.9", "80.7", "82.4", "72.2"]
    assert table3["HPNet"] == [
        "×",
        "Local",
        "20.0",
        "60.0",
        "70.0",
        "40.0",
        *paper,
        "-48.9",
        "-20.7",
        "-12.4",
        "-32.2",
    ]
    assert table3["+ Global Branch"][2] == "30.0"
    assert table3["+ Fixed FE"][2:6] == ["not run (make ablations)", "–", "–", "–"]
    assert table3["SANet"][2] == "not run (make ablations)"
    layers = table_rows(report_section(markdown, "### Table 4: AFE layers"))
    assert layers["3 layers"] == ["40.0", "40.0", "74.8", "76.8", "-34.8", "-36.8"]
    assert layers["7 layers"][0] == "not run (make ablations)"
    kernels = table_rows(report_section(markdown, "### Table 4: cell operation"))
    assert kernels["Conv1×1"] == ["45.0", "40.0", "73.1", "75.9", "-28.1", "-35.9"]
    assert kernels["Conv3×3"][0] == "not run (make ablations)"
    # the runs shown are named in the sidecar, not in the report (a DVC output: run ids differ in every clone)
    assert not [run_id for run_id in (hpnet, glob, layers3, kernel1, *ignored) if run_id in markdown]
    shown = json.loads((workdir / "reports" / "benchmark.provenance.json").read_text())["ablation_run_ids"]
    assert sorted(shown.values()) == sorted([hpnet, glob, layers3, kernel1])


def test_ablation_search_failure_still_writes_the_report(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_eval(workdir / "eval", "partial_ilids_p", REAL["partial_ilids_p"])

    def broken(*args: object, **kwargs: object) -> None:
        raise mlflow.exceptions.MlflowException("the store is on fire")

    monkeypatch.setattr(mlflow.MlflowClient, "search_runs", broken)
    markdown = write_report(workdir, report_params(workdir)).path.read_text()
    assert "The ablation search was skipped: the MLflow tracking store could not be searched" in markdown
    assert "the store is on fire" in markdown


# ---- determinism and tracking ----------------------------------------------------------------------------------


def test_two_runs_give_identical_files_and_an_mlflow_run(workdir: Path) -> None:
    params = report_params(workdir)
    for name, values in REAL.items():
        write_eval(workdir / "eval", name, values, synthetic=True, pipeline_run="pipe-123")
    _write_training(workdir / "train")

    first = write_report(workdir, params)
    assert [p.name for p in first.figures] == ["cmc.png", "training.png", "comparison.png"]
    before = {p: p.read_bytes() for p in [first.path, first.table_path, *first.figures]}
    second = write_report(workdir, params)
    assert {p: p.read_bytes() for p in [second.path, second.table_path, *second.figures]} == before

    markdown = first.path.read_text()
    assert "pipe-123" not in markdown and first.mlflow_run_id not in markdown and "eval-" not in markdown
    sidecar = json.loads((workdir / "reports" / "benchmark.provenance.json").read_text())
    assert sidecar["mlflow_run_id"] == second.mlflow_run_id and sidecar["pipeline_run"] == "pipe-123"
    assert sidecar["evaluation_run_ids"]["partial_reid"] == "eval-partial_reid"
    training = table_rows(report_section(markdown, "## Training"))
    assert training["Untrained"][:1] == ["5.0"] and training["Trained"][:1] == ["50.0"]
    assert "![Training curves](figures/training.png)" in markdown

    client = mlflow.MlflowClient(params.tracking.uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.stage = 'report'", order_by=["start_time ASC"]
    )
    assert [r.info.run_id for r in runs] == [first.mlflow_run_id, second.mlflow_run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "report (demo)"
    assert run.data.tags["pipeline_run"] == "pipe-123"  # the evaluations' (their sidecars name it)
    assert run.data.tags["data_md5"] == "m" * 32  # the training benchmark's run.json
    assert run.data.metrics["partial_reid/rank1"] == pytest.approx(0.9012)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/benchmark.md", "report/benchmark.txt"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "report/figures")}
    assert figures == {f"report/figures/{n}.png" for n in ("cmc", "training", "comparison")}
