"""The `sanet` command line: one sub-command per pipeline stage, each a thin call into a `sanet` stage function.

Every command accepts `--params FILE` and repeated `--set key.sub=value`; the parameters are validated before any
work starts. Expected failures (bad parameters, a missing dataset folder, a corrupt image) print one clear message
and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import sanet  # noqa: F401  (sets the no-telemetry environment before mlflow or dvc can be imported)
from sanet.config import DEFAULT_PARAMS_FILE, ConfigError, Params, load_params, to_yaml
from sanet.data.benchmarks import BenchmarkError, available_benchmarks, build_benchmark, format_statistics
from sanet.data.synthetic import OverwriteError, write_contact_sheet, write_synthetic

EXIT_USAGE = 2


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--params", type=Path, default=DEFAULT_PARAMS_FILE, help="parameter file (params.yaml)")
    parent.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set model.afe.layers=3 (repeatable; validated like params.yaml)",
    )
    return parent


def cmd_synth(args: argparse.Namespace, params: Params) -> int:
    """Generate the synthetic benchmark and/or its contact sheet."""
    synth = params.synth
    if args.seed is not None:
        synth = synth.model_copy(update={"seed": args.seed})
    if args.out is not None:
        counts = write_synthetic(args.out, synth, progress=not args.quiet)
        total = sum(counts.values())
        print(f"wrote the synthetic benchmark (seed {synth.seed}) to {args.out}: {total} images")
        for folder, n in counts.items():
            print(f"  {folder}: {n} images")
    if args.preview is not None:
        path = write_contact_sheet(args.preview, synth)
        print(f"wrote the contact sheet {path}")
    return 0


def cmd_data_stats(args: argparse.Namespace, params: Params) -> int:
    """Print identities and images per split for every benchmark found under the root."""
    root = Path(args.root if args.root is not None else params.data.root)
    rows = []
    for name in available_benchmarks(root):
        rows += build_benchmark(name, root, verify_images=not args.no_verify).statistics()
    print(format_statistics(rows))
    return 0


def cmd_config_show(args: argparse.Namespace, params: Params) -> int:
    """Print the resolved parameters (profile and overrides applied)."""
    print(f"# profile: {params.profile}")
    print(to_yaml(params), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="sanet", description="SANet partial person re-identification benchmark")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = sub.add_parser("synth", parents=[common], help="generate the synthetic benchmark (six real layouts)")
    synth.add_argument("--out", type=Path, help="folder to write the benchmark layouts into (e.g. data)")
    synth.add_argument("--seed", type=int, help="seed (default: synth.seed in params.yaml)")
    synth.add_argument("--preview", type=Path, metavar="FILE.png", help="write a contact sheet PNG")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=cmd_synth)

    data = sub.add_parser("data", help="inspect benchmark folders")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    stats = data_sub.add_parser("stats", parents=[common], help="identities and images per split, per benchmark")
    stats.add_argument("--root", type=Path, help="folder holding the benchmark folders (default: data.root)")
    stats.add_argument("--no-verify", action="store_true", help="skip decoding every image")
    stats.set_defaults(func=cmd_data_stats)

    config = sub.add_parser("config", help="parameters")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = config_sub.add_parser("show", parents=[common], help="print the resolved, validated parameters")
    show.set_defaults(func=cmd_config_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "synth" and args.out is None and args.preview is None:
        parser.error("synth needs --out DIR, --preview FILE.png, or both")
    func: Callable[[argparse.Namespace, Params], int] = args.func
    try:
        params = load_params(args.params, args.overrides)
        return func(args, params)
    except (ConfigError, BenchmarkError, OverwriteError) as exc:
        print(f"sanet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and friends: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
