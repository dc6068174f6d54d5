"""Wall-clock time of every `make demo` step on this machine: data, each DVC stage, the previews, and the total.

`make demo` must finish within 15 minutes on 2 cores from a fresh clone, install included (README, make demo).
This script replays the pipeline after the install, in the current checkout, one step at a time: `sanet synth`
(checked against data.dvc as `make demo` does), then `dvc repro --force --single-item` of each stage in pipeline
order (the hpo stage's four studies one by one), then the mask preview. A stage's outputs are byte-reproducible
(docs/pipeline.md), so the replay leaves `git status` as it was; `--stages` times a subset. A study with
the same settings would resume, and run no trial, so an existing `optuna.db` is first renamed to
`optuna.db.<time>.bak`: the studies then run all their trials, as in a fresh clone.

Prints one row per step (seconds and share of the total) and the total; add the install (`make install` on a fresh
machine, about 2 minutes) for the fresh-clone figure.

Usage: python benchmarks/stage_times.py [--stages masks train ...] [--no-synth]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pipeline_steps() -> list[str]:
    """dvc.yaml's stages in the order `dvc repro` runs them, foreach stages expanded (`hpo@joint`)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    steps = []
    for name, stage in stages.items():
        items = stage.get("foreach")
        steps += [f"{name}@{item}" for item in items] if isinstance(items, list) else [name]
    return steps


def timed(label: str, command: list[str], env: dict[str, str]) -> float:
    """Run `command` in the repository root; returns its wall-clock seconds (a failing command stops the script)."""
    print(f"-- {label}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{label} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    steps = pipeline_steps()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="*", default=steps, help=f"steps to time (default: all of {steps})")
    parser.add_argument("--no-synth", action="store_true", help="do not regenerate data/ first")
    args = parser.parse_args()
    unknown = sorted(set(args.stages) - set(steps))
    if unknown:
        parser.error(f"unknown stages {unknown}: choose from {steps}")

    env = os.environ | {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "SANET_PIPELINE_RUN": os.environ.get("SANET_PIPELINE_RUN", "stage-times"),
    }
    rows: list[tuple[str, float]] = []
    if not args.no_synth:
        rows.append(("synth", timed("synth", [str(BIN / "sanet"), "synth", "--out", "data", "--quiet"], env)))
        rows.append(("data.dvc check", timed("data.dvc", [str(BIN / "dvc"), "commit", "--quiet", "data.dvc"], env)))
    storage = REPO / "optuna.db"
    if storage.exists() and any(step.startswith("hpo") for step in args.stages):
        kept = storage.with_name(f"optuna.db.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        storage.rename(kept)
        print(f"-- {storage.name} renamed to {kept.name} (a fresh clone's studies start empty)")
    for step in (s for s in steps if s in args.stages):
        rows.append((step, timed(step, [str(BIN / "dvc"), "repro", "--force", "--single-item", step], env)))
    if "masks" in args.stages:
        preview = [str(BIN / "sanet"), "masks", "--preview", "reports/masks_preview.png", "--quiet"]
        rows.append(("masks preview", timed("masks preview", preview, env)))

    total = sum(seconds for _, seconds in rows)
    print(f"\n{'step':<24} {'seconds':>8} {'share':>6}")
    for label, seconds in rows:
        print(f"{label:<24} {seconds:8.1f} {100 * seconds / total:5.1f}%")
    print(f"{'total':<24} {total:8.1f}  ({total / 60:.1f} min; add about 2 min for `make install` on a fresh clone)")


if __name__ == "__main__":
    main()
