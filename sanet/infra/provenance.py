"""Run provenance, kept apart from what a run computed: the sidecar files beside the DVC outputs.

Every DVC output (the `outs` of dvc.yaml: masks, the trained model and its metrics and history, the evaluation
folders, the report and its figures, registry.json, the studies' summaries and plots) is a deterministic function
of the code, the parameters and the data, so that a fresh clone's `make demo` reproduces `dvc.lock` and the
committed reports byte for byte (`git status` stays clean). What differs between two runs of the same inputs is
*provenance*, and it never goes into those files:

- MLflow run ids, the pipeline run (`SANET_PIPELINE_RUN`, or a generated id), the git sha (it changes with every
  commit: in an output it would change dvc.lock whenever anything is committed);
- wall-clock facts: timestamps, durations, measured speeds (images/s);
- the state of a store: model-registry versions and aliases, the registered model's URI, the tracking and Optuna
  storage URIs (environment variables can change them).

Provenance is recorded in two places:

1. **MLflow**, the primary record: the tags, params and metrics of the stage's run (git_sha, pipeline_run,
   model_md5, images_per_second, ...), where `make ui` and `sanet registry show` read them.
2. **A sidecar JSON file** next to the output, for the command line and for the next stage: not a DVC output and
   git-ignored (`*.provenance.json`, and `outputs/` as a whole), so it may differ from run to run. `sidecar_path`
   names it: `outputs/train/provenance.json` for the training (its folder is not an output, its files are),
   `reports/eval/<benchmark>.provenance.json` beside an evaluation folder, `reports/benchmark.provenance.json`,
   `reports/registry.provenance.json`, `reports/hpo/<space>.provenance.json`.

A sidecar is a hint, never an input that changes a result: a stage reads one only to link MLflow runs (the
registration finds its training run through it, or through the training run's `model_md5` tag when it is
missing, as on Kubeflow where only model.pt travels), and every sidecar names the `model_md5` it belongs to, so a
stale one (another model) is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sanet.contracts.files import TRAIN_PROVENANCE_FILE
from sanet.infra.atomic import atomic_write

__all__ = ["SIDECAR_SUFFIX", "read_sidecar", "sidecar_path", "training_sidecar", "write_sidecar"]

SIDECAR_SUFFIX = ".provenance.json"


def sidecar_path(output: str | Path) -> Path:
    """The sidecar of a DVC output: `<folder>.provenance.json` beside an output folder (`reports/eval/market1501`),
    `<stem>.provenance.json` beside an output file (`reports/registry.json` -> `reports/registry.provenance.json`)."""
    output = Path(output)
    if output.suffix and not output.is_dir():
        return output.with_name(output.stem + SIDECAR_SUFFIX)
    return output.with_name(output.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write a sidecar atomically (indent 2, keys sorted, final newline)."""
    text = json.dumps(dict(data), indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def read_sidecar(path: str | Path, model_md5: str | None = None) -> dict[str, Any]:
    """A sidecar's content; {} when it is missing, unreadable, or (with `model_md5`) about another model file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    if model_md5 is not None and data.get("model_md5") != model_md5:
        return {}
    return data


def training_sidecar(model_file: str | Path, model_md5: str | None = None) -> dict[str, Any]:
    """The provenance `sanet train` left beside `model_file` (MLflow run, pipeline run, ...), {} when none matches."""
    return read_sidecar(Path(model_file).parent / TRAIN_PROVENANCE_FILE, model_md5)
