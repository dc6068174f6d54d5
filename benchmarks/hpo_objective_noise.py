"""How much the Optuna trial objective moves between reruns of one setting, and between settings.

A search can only rank settings whose scores differ by more than a rerun of one setting moves. This script runs the
trial objective `sanet hpo` maximises (`sanet.hpo.trial.TrialObjective`: the short schedule of `hpo.epochs` epochs,
scored on `hpo.val_ids` identities held out of `data.train`'s training split, never a test benchmark) for a few
settings, each with a few seeds, and prints per setting the mean and the spread across seeds, then the spread
between the settings' means, for:

* `score`: the objective, the mean of the holistic and the partial held-out mAP (`sanet.train.validation`), after
  the last epoch (`score@1`) and averaged over the last k epochs (`score@k`, `--average`; `hpo.score_epochs`);
* its two halves, `holistic_mAP` (every held-out image a query) and `partial_mAP` (a crop of every held-out image a
  query), and `mAP`, the one-query-per-identity mAP that was the objective before;
* `epoch move`: the mean absolute change of the score from one epoch's validation to the next, over the last
  max(--average) changes (trials of two epochs or more).

A seed is the `seed` parameter: it draws the initialisation, the batches and the augmentation, and also which
identities are held out and the partial crops. Trials of one study share one split, so the rerun spread measured here
is, if anything, larger than the one a study sees. Settings are written as `name=value[,name=value]` with the
search-space names (`afe_layers`, `afe_kernel`, `triplet_weight`); their names must form one search space (a single
name, or all three for `joint`); the rest comes from params.yaml (`--profile`, `--set`).

Each run trains for real (minutes per trial on a CPU in the demo profile): the default is 3 settings x 2 seeds of
the demo profile's `hpo.epochs`. MLflow runs go to a throw-away SQLite store unless `--set tracking.uri=...`.

Usage: python benchmarks/hpo_objective_noise.py [--settings afe_layers=1 afe_layers=5 triplet_weight=1.0]
       [--seeds 0 1] [--profile demo] [--epochs N] [--val-ids N] [--average 1 2] [--device cpu|cuda|auto]
       [--set key=value ...] [--json out.json] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sanet.config import Params, load_params
from sanet.hpo.spaces import DOTTED, SPACES, space_params

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SETTINGS = ("afe_layers=1", "afe_layers=5", "triplet_weight=1.0")
HALVES = ("holistic_mAP", "partial_mAP", "mAP")


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """`afe_layers=1` -> ("afe_layers", {"afe_layers": 1}): the search space the names form, and the values."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = part.partition("=")
        if not sep or name not in DOTTED:
            raise SystemExit(f"setting {text!r}: expected name=value with a name among {', '.join(DOTTED)}")
        values[name] = yaml.safe_load(raw)
    for space in SPACES:
        if set(space_params(space)) == set(values):
            return space, values
    raise SystemExit(f"setting {text!r}: its names must be one search space's ({', '.join(SPACES)})")


def trial_settings(args: argparse.Namespace, seed: int, store: Path) -> Params:
    overrides = [f"profile={args.profile}", f"seed={seed}", "tracking.system_metrics=false"]
    overrides += [f"tracking.uri=sqlite:///{store / 'mlflow.db'}", f"hpo.out_dir={store / 'trials'}"]
    if args.epochs is not None:
        overrides.append(f"hpo.epochs={args.epochs}")
    if args.val_ids is not None:
        overrides.append(f"hpo.val_ids={args.val_ids}")
    return load_params(REPO / "params.yaml", [*overrides, *args.set])


def run_trial(params: Params, space: str, values: dict[str, Any], device: str) -> dict[str, Any]:
    """One trial of the objective, as a study would run it (without a study: a FixedTrial, never pruned)."""
    import optuna

    from sanet.hpo.study import StudyInfo, create_parent_run
    from sanet.hpo.trial import TrialObjective

    name = f"noise-{space}"
    info = StudyInfo(
        name=name,
        storage="(none)",
        space=space,
        parent_run_id=create_parent_run(params, space, name),
        experiment=params.hpo.experiment,
    )
    objective = TrialObjective(params, space, info, progress=False, device=device)
    started = time.perf_counter()
    value = objective(optuna.trial.FixedTrial(values))
    return {"value": value, "validations": objective.validations, "seconds": time.perf_counter() - started}


def scores(run: dict[str, Any], averages: Sequence[int]) -> dict[str, float]:
    """The numbers compared across seeds and settings (fractions), from one trial's validations."""
    validations = run["validations"]
    out = {f"score@{k}": statistics.fmean(v["score"] for v in validations[-k:]) for k in averages}
    last = validations[-1]
    out |= {key: last[key] for key in HALVES}
    series = [v["score"] for v in validations]
    moves = [abs(b - a) for a, b in itertools.pairwise(series)][-max(averages) :]
    if moves:  # a one-epoch trial has no move
        out["epoch move"] = statistics.fmean(moves)
    return out


def spread(values: Sequence[float]) -> float:
    """Max minus min (with two seeds: the distance between them)."""
    return max(values) - min(values) if values else float("nan")


def report(results: dict[str, list[dict[str, float]]], seeds: Sequence[int]) -> str:
    """Per setting and number: mean ± sample std (range) across seeds; then between settings, in points."""
    keys = list(next(iter(results.values()))[0])
    width = max(*(len(s) for s in results), len("rerun range (mean over settings)")) + 2
    lines = [f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) per setting; numbers in points (100 x fraction)", ""]
    header = "setting".ljust(width) + "".join(f"{k:>24}" for k in keys)
    lines += [header, "-" * len(header)]
    for setting, runs in results.items():
        cells = []
        for key in keys:
            values = [100 * r[key] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):7.2f} ±{sd:5.2f} (r {spread(values):5.2f})")
        lines.append(setting.ljust(width) + "".join(f"{c:>24}" for c in cells))
    lines.append("")
    within = {k: statistics.fmean(spread([100 * r[k] for r in runs]) for runs in results.values()) for k in keys}
    between = {k: spread([statistics.fmean(100 * r[k] for r in runs) for runs in results.values()]) for k in keys}
    lines.append("rerun range (mean over settings)".ljust(width) + "".join(f"{within[k]:>24.2f}" for k in keys))
    lines.append("range of the settings' means".ljust(width) + "".join(f"{between[k]:>24.2f}" for k in keys))
    ratio = {k: between[k] / within[k] if within[k] > 0 else float("inf") for k in keys}
    lines.append("between / rerun".ljust(width) + "".join(f"{ratio[k]:>24.2f}" for k in keys))
    lines.append("")
    lines.append("between / rerun > 1: the settings differ by more than a rerun moves (higher is better)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), help="name=value[,name=value]")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--epochs", type=int, help="a trial's epochs (default: the profile's hpo.epochs)")
    parser.add_argument("--val-ids", type=int, help="held-out identities (default: the profile's hpo.val_ids)")
    parser.add_argument("--average", nargs="+", type=int, default=[1, 2], help="score over the last k epochs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="params.yaml overrides")
    parser.add_argument("--json", type=Path, help="also write every trial's validations here")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if any(k < 1 for k in args.average):
        parser.error("--average takes positive epoch counts")
    settings = [(text, *parse_setting(text)) for text in args.settings]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    results: dict[str, list[dict[str, float]]] = {}
    raw: list[dict[str, Any]] = []
    params: Params | None = None
    with tempfile.TemporaryDirectory(prefix="hpo-noise-") as tmp:
        for text, space, values in settings:
            for seed in args.seeds:
                params = trial_settings(args, seed, Path(tmp))
                with contextlib.redirect_stdout(sys.stderr):  # the trainer's lines: stdout is for the report
                    run = run_trial(params, space, values, args.device)
                numbers = scores(run, args.average)
                results.setdefault(text, []).append(numbers)
                raw.append({"setting": text, "seed": seed, **run, "numbers": numbers})
                shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in numbers.items())
                print(f"{text} seed {seed}: {shown} ({run['seconds']:.0f} s)", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    assert params is not None
    print(
        f"profile {args.profile}: {params.hpo.epochs} epochs per trial, {params.hpo.val_ids} held-out identities of "
        f"{params.data.train}"
    )
    print(report(results, args.seeds))


if __name__ == "__main__":
    main()
