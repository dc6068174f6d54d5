"""The benchmark pipeline's stages as cluster steps: fetch inputs by URI, run the CLI's stage function, upload.

A Kubeflow component (`components/`) is a thin wrapper around one of these functions; they hold the only logic of a
cluster run beyond the stage functions themselves. Every step:

- reads its parameters from `params_file` (the image's `/opt/sanet/params.yaml`) with `overrides` (`key=value`,
  as `sanet --set`), validated before any work; the data, mask and output folders are set to the pod's scratch
  space, whatever the file says;
- downloads what it reads from URIs under the run's work prefix (`s3://bucket/prefix/<run>/...`), runs, and
  uploads what it writes there (`sanet.cluster.transfer`); small results come back as the step's return value,
  which the component turns into Kubeflow outputs, metrics and Markdown;
- tags its MLflow runs with the pipeline run (`SANET_PIPELINE_RUN`), like one `dvc repro`.

Layout of a run's work prefix `<work_root>/<run id>`: `data/` (the fetched benchmarks), `masks/`, `<train>/`
(model.pt, metrics.json, history.csv, checkpoints/), `eval/<benchmark>/`, `reports/` (benchmark.md, figures/,
masks_coverage.json, masks_metrics.json, registry.json), `hpo/<space>/` (summary and plots; `hpo/<space>/train`,
`.../eval/` for the best configuration).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanet.cluster.fetch import fetch_data
from sanet.cluster.transfer import download, download_file, join_uri, upload
from sanet.cluster.workspace import (
    DEFAULT_PARAMS_FILE,
    download_evaluations,
    flat_numbers,
    pipeline_run_tag,
    step_overrides,
    step_params,
    step_scratch,
    weights,
)
from sanet.contracts.files import (
    FIGURES_DIR,
    HISTORY_FILE,
    MODEL_FILE,
    REPORT_FILE,
    TRAIN_METRICS_FILE,
    eval_files,
)
from sanet.infra.errors import StorageError

__all__ = [
    "DEFAULT_PARAMS_FILE",
    "EvaluateStep",
    "FetchStep",
    "GateStep",
    "MasksStep",
    "RegisterStep",
    "ReportStep",
    "TrainStep",
    "evaluate_step",
    "fetch_step",
    "gate_step",
    "masks_step",
    "register_step",
    "report_step",
    "torchrun_command",
    "train_step",
]

# ---- fetch, masks ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchStep:
    """Where the fetched benchmarks are now, what they are and their content hash."""

    work_uri: str
    data_uri: str
    benchmarks: list[str]
    files: int
    bytes: int
    data_md5: str
    statistics: str

    def metrics(self) -> dict[str, float]:
        """For the Kubeflow UI."""
        return {"files": float(self.files), "megabytes": self.bytes / 1e6, "benchmarks": float(len(self.benchmarks))}

    def markdown(self) -> str:
        """Identities, images and cameras per split, and where the data is now."""
        return f"# Data\n\n`{self.data_uri}` (md5 `{self.data_md5}`)\n\n```\n{self.statistics}\n```\n"


def fetch_step(source: str, work_root: str, run_id: str, dvc_md5: str = "") -> FetchStep:
    """Fetch the benchmarks from `source` (a DVC remote with `dvc_md5`, else a prefix) to `<work_uri>/data`.

    `work_uri` = `<work_root>/<run_id>`: the run's own prefix, under which every later step reads and writes.
    The copy under the run's prefix is what every later step reads: the run keeps the exact data it used even if
    the source prefix changes later. Images are verified (a corrupt one stops the step, naming it).
    """
    from sanet.data.benchmarks import build_benchmark, format_statistics
    from sanet.infra.hashing import files_md5

    with step_scratch() as scratch:
        fetched = fetch_data(source, scratch / "data", dvc_md5=dvc_md5)
        rows = []
        for name in fetched.benchmarks:
            rows += build_benchmark(name, fetched.root, verify_images=True).statistics()
        files = [p for p in fetched.root.rglob("*") if p.is_file()]
        work_uri = join_uri(work_root, run_id)
        data_uri = join_uri(work_uri, "data")
        upload(fetched.root, data_uri)
        return FetchStep(
            work_uri=work_uri,
            data_uri=data_uri,
            benchmarks=list(fetched.benchmarks),
            files=fetched.stats.files,
            bytes=fetched.stats.bytes,
            data_md5=files_md5(files, fetched.root),
            statistics=format_statistics(rows),
        )


@dataclass(frozen=True)
class MasksStep:
    """Where the part masks are, and their coverage and speed."""

    masks_uri: str
    images: int
    seconds: float
    no_person: int
    coverage: dict[str, float]
    run_id: str

    def metrics(self) -> dict[str, float]:
        """Images, seconds, images without a person, and coverage per benchmark, split and part."""
        counts = {"images": float(self.images), "seconds": self.seconds, "no_person": float(self.no_person)}
        return counts | {f"coverage/{key}": value for key, value in self.coverage.items()}


def masks_step(
    params_file: str,
    overrides: Sequence[str],
    data_uri: str,
    work_uri: str,
    pipeline_run: str = "",
    weights_uri: str = "",
) -> MasksStep:
    """Part masks of every benchmark under `data_uri` (the `masks` stage) to `<work_uri>/masks`.

    `weights_uri`: the team's weights folder (the OpenPifPaf checkpoint; see `sanet.cluster.workspace.weights`).
    """
    from sanet.infra.tracking import check_tracking_uri, tracking_uri
    from sanet.masks.stage import run_masks

    with step_scratch() as scratch, pipeline_run_tag(pipeline_run):
        params = step_params(params_file, overrides, scratch)
        check_tracking_uri(tracking_uri(params))
        with weights(weights_uri, scratch):  # after the parameters and the tracking store are checked
            download(data_uri, params.data.root)
            report = run_masks(params, "all", progress=False)
            run_id = report.run_id
            masks_uri = join_uri(work_uri, "masks")
            upload(Path(params.masks.out_dir), masks_uri)
            upload(Path(params.masks.coverage_file), join_uri(work_uri, "reports"))
            upload(Path(params.masks.metrics_file), join_uri(work_uri, "reports"))
            assert run_id is not None  # run_masks tracks by default: it logged its MLflow run
            return MasksStep(
                masks_uri=masks_uri,
                images=report.images,
                seconds=report.seconds,
                no_person=report.no_person,
                coverage=flat_numbers(report.coverage),
                run_id=run_id,
            )


# ---- train -----------------------------------------------------------------------------------------------------


def torchrun_command(params_file: str, overrides: Sequence[str], out_dir: Path, gpus: int) -> list[str]:
    """`sanet train` under torchrun: one process per GPU (`gpus` 0: one CPU process, over gloo)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={max(gpus, 1)}",
        "-m",
        "sanet.cli",
        "train",
        "--quiet",
        "--restart-stale",
        "--device",
        "cuda" if gpus > 0 else "cpu",
        "--params",
        params_file,
        "--out",
        str(out_dir),
    ]
    for override in overrides:
        command += ["--set", override]
    return command


def _run_forwarding_sigterm(command: list[str]) -> int:
    """Run `command`; a SIGTERM to this process (a pod being stopped) goes to it, so training checkpoints first."""
    process = subprocess.Popen(command)
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum: int, frame: Any) -> None:
        process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class TrainStep:
    """Where the trained model's folder is, and its final validation metrics."""

    train_uri: str
    model_uri: str
    metrics: dict[str, float]
    resumed: bool


def train_step(
    params_file: str,
    overrides: Sequence[str],
    data_uri: str,
    masks_uri: str,
    work_uri: str,
    gpus: int = 1,
    name: str = "train",
    pipeline_run: str = "",
    weights_uri: str = "",
) -> TrainStep:
    """Train (`torchrun --nproc_per_node=<gpus> -m sanet.cli train`) and upload the folder to `<work_uri>/<name>`.

    A retried step (a pod evicted or preempted) resumes: the folder, checkpoints included, is uploaded even when
    training stops early, and downloaded again before training starts.

    `weights_uri`: the team's weights folder (ImageNet initialisation; see `sanet.cluster.workspace.weights`).

    Raises TrainingError when training exits with an error or is stopped (after uploading its checkpoint).
    """
    from sanet.train.errors import TrainingError

    with step_scratch() as scratch, pipeline_run_tag(pipeline_run):
        params = step_params(params_file, overrides, scratch)  # validates before any download
        with weights(weights_uri, scratch):
            train_uri = join_uri(work_uri, name)
            out_dir = scratch / name
            resumed = download(train_uri, out_dir, missing_ok=True).files > 0
            download(data_uri, params.data.root)
            download(masks_uri, params.masks.out_dir)
            code = _run_forwarding_sigterm(
                torchrun_command(params_file, step_overrides(params_file, overrides, scratch), out_dir, gpus)
            )
            if out_dir.exists():
                upload(out_dir, train_uri)
            if code != 0:
                raise TrainingError(
                    f"training exited with status {code}"
                    + (" (stopped: its checkpoint is uploaded, a retry resumes)" if code == 143 else "")
                )
            metrics_file = out_dir / TRAIN_METRICS_FILE
            metrics = flat_numbers(json.loads(metrics_file.read_text())) if metrics_file.is_file() else {}
            return TrainStep(train_uri, join_uri(train_uri, MODEL_FILE), metrics, resumed)


# ---- evaluate, report ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluateStep:
    """Where one benchmark's evaluation folder is, and its metrics."""

    eval_uri: str
    benchmark: str
    metrics: dict[str, float]
    summary: str

    def markdown(self) -> str:
        """The one-line summary `sanet evaluate` prints."""
        return f"# {self.benchmark}\n\n{self.summary}\n\nFolder: `{self.eval_uri}`\n"


def evaluate_step(
    params_file: str,
    overrides: Sequence[str],
    benchmark: str,
    data_uri: str,
    train_uri: str,
    work_uri: str,
    device: str = "auto",
    prefix: str = "eval",
    pipeline_run: str = "",
) -> EvaluateStep:
    """Evaluate `<train_uri>/model.pt` on `benchmark` (the `evaluate` stage) into `<work_uri>/<prefix>/<benchmark>`."""
    from sanet.data.benchmarks import BENCHMARKS
    from sanet.engine.cpu_kernels import pin_cpu_kernels

    if benchmark not in BENCHMARKS:
        from sanet.infra.errors import EvaluationError

        raise EvaluationError(f"unknown benchmark {benchmark!r}: one of {', '.join(BENCHMARKS)}")
    with step_scratch() as scratch, pipeline_run_tag(pipeline_run):
        params = step_params(params_file, overrides, scratch)
        pin_cpu_kernels(params.train.cpu_kernels)  # as `sanet evaluate` does, before numpy and torch load
        from sanet.evaluation.stage import run_evaluate

        model_file = download_file(join_uri(train_uri, MODEL_FILE), scratch / MODEL_FILE)
        download(data_uri, params.data.root)
        out_dir = scratch / "eval" / benchmark
        result = run_evaluate(params, benchmark, model_file, out_dir=out_dir, device=device, progress=False)
        eval_uri = join_uri(work_uri, prefix, benchmark)
        upload(out_dir, eval_uri)
        return EvaluateStep(eval_uri, benchmark, dict(result.metrics), result.summary())


@dataclass(frozen=True)
class ReportStep:
    """Where the report is, its Markdown, and the headline metrics per benchmark."""

    report_uri: str
    markdown: str
    metrics: dict[str, float] = field(default_factory=dict)


def report_step(
    params_file: str,
    overrides: Sequence[str],
    eval_uris: Sequence[str],
    train_uri: str,
    work_uri: str,
    prefix: str = "reports",
    pipeline_run: str = "",
) -> ReportStep:
    """The paper-comparison report (the `report` stage) of the evaluations `eval_uris`, to `<work_uri>/<prefix>`."""
    from sanet.report.stage import run_report

    with step_scratch() as scratch, pipeline_run_tag(pipeline_run):
        params = step_params(params_file, overrides, scratch)
        eval_dir, train_dir, out = scratch / "eval", scratch / "train", scratch / "reports"
        names = download_evaluations(eval_uris, eval_dir)
        for file in (MODEL_FILE, TRAIN_METRICS_FILE, HISTORY_FILE):
            try:
                download_file(join_uri(train_uri, file), train_dir / file)
            except StorageError:
                if file == MODEL_FILE:
                    raise
        result = run_report(
            params,
            eval_dir=eval_dir,
            train_dir=train_dir,
            out=out / REPORT_FILE.name,
            figures_dir=out / FIGURES_DIR.name,
        )
        report_uri = join_uri(work_uri, prefix)
        upload(out, report_uri)
        metrics: dict[str, float] = {}
        for name in names:
            values = json.loads(eval_files(name, eval_dir).metrics.read_text())
            metrics |= {f"{name}/{key}": float(values[key]) for key in ("rank1", "mAP") if key in values}
        return ReportStep(report_uri, result.path.read_text(), metrics)


# ---- gate, register --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateStep:
    """The promotion gate's decision for the evaluated model, before it is registered."""

    passed: bool
    kind: str
    reason: str
    champion_version: int | None
    model_name: str

    def markdown(self) -> str:
        """The decision as Markdown (the Kubeflow UI shows it beside the run)."""
        champion = f"v{self.champion_version}" if self.champion_version is not None else "none yet"
        lines = [f"# Promotion gate of `{self.model_name}`: {self.kind}", "", f"Champion: {champion}", ""]
        return "\n".join(lines + [f"- {line}" for line in self.reason.splitlines()]) + "\n"


def _evaluated_model(train_uri: str, eval_uris: Sequence[str], scratch: Path) -> tuple[Path, Path]:
    model_file = download_file(join_uri(train_uri, MODEL_FILE), scratch / "train" / MODEL_FILE)
    eval_dir = scratch / "eval"
    download_evaluations(eval_uris, eval_dir)
    return model_file, eval_dir


def gate_step(params_file: str, overrides: Sequence[str], train_uri: str, eval_uris: Sequence[str]) -> GateStep:
    """The gate of the evaluated model against the registry's champion (`sanet.registry.check_gate`)."""
    from sanet.registry.stage import check_gate

    with step_scratch() as scratch:
        params = step_params(params_file, overrides, scratch)
        model_file, eval_dir = _evaluated_model(train_uri, eval_uris, scratch)
        check = check_gate(params, model_file, eval_dir)
        decision = check.decision
        return GateStep(decision.passed, decision.kind, decision.reason, check.champion_version, check.model_name)


@dataclass(frozen=True)
class RegisterStep:
    """The version registered, the gate's decision at registration, and where registry.json went."""

    version: int
    kind: str
    champion_version: int | None
    summary: str
    record_uri: str
    record: str

    def markdown(self) -> str:
        """The summary `sanet register` prints and the registry.json it wrote."""
        return f"# Registered\n\n{self.summary}\n\n```json\n{self.record}\n```\n"


def register_step(
    params_file: str,
    overrides: Sequence[str],
    train_uri: str,
    eval_uris: Sequence[str],
    work_uri: str,
    pipeline_run: str = "",
) -> RegisterStep:
    """Register the evaluated model (the `register` stage); registry.json goes to `<work_uri>/reports/`."""
    from sanet.infra.provenance import sidecar_path
    from sanet.registry.stage import run_register

    with step_scratch() as scratch, pipeline_run_tag(pipeline_run):
        params = step_params(params_file, overrides, scratch)
        model_file, eval_dir = _evaluated_model(train_uri, eval_uris, scratch)
        out = scratch / "reports" / "registry.json"
        result = run_register(params, model_file=model_file, eval_dir=eval_dir, out=out)
        record_uri = join_uri(work_uri, "reports")
        upload(out, record_uri)
        upload(sidecar_path(out), record_uri)  # the version, aliases and runs (registry.json has none of them)
        return RegisterStep(
            version=result.version,
            kind=result.decision.kind,
            champion_version=result.champion_version,
            summary=result.summary(),
            record_uri=join_uri(record_uri, "registry.json"),
            record=out.read_text(),
        )
