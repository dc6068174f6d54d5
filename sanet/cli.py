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
from typing import Any

import sanet  # noqa: F401  (sets the no-telemetry environment before mlflow or dvc can be imported)
from sanet.config import DEFAULT_PARAMS_FILE, Params, load_params, to_yaml
from sanet.contracts.files import (
    EVAL_DIR,
    FIGURES_DIR,
    MODEL_FILE,
    PLOTS_PAGE_DIR,
    REGISTRY_RECORD,
    REPORT_FILE,
    TRAIN_DIR,
)
from sanet.contracts.pipelines import PIPELINES
from sanet.contracts.studies import SPACES
from sanet.contracts.variants import VARIANTS
from sanet.data.benchmarks import BENCHMARKS, available_benchmarks, build_benchmark, format_statistics
from sanet.engine.cpu_kernels import pin_cpu_kernels  # torch-free until torch is imported
from sanet.infra.errors import SanetError  # every error the project raises on purpose derives from it

EXIT_USAGE = 2
BENCHMARK_NAMES = list(BENCHMARKS)
# the commands whose results are CPU arithmetic: they run the kernels train.cpu_kernels names
KERNEL_COMMANDS = frozenset({"train", "evaluate", "hpo"})


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
    from sanet.data.stage import run_synth

    synth = params.synth
    if args.seed is not None:
        synth = synth.model_copy(update={"seed": args.seed})
    result = run_synth(synth, out=args.out, preview=args.preview, progress=not args.quiet)
    if args.out is not None:
        print(f"wrote the synthetic benchmark (seed {synth.seed}) to {args.out}: {result.images} images")
        for folder, n in result.counts.items():
            print(f"  {folder}: {n} images")
    if result.preview is not None:
        print(f"wrote the contact sheet {result.preview}")
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


def cmd_model_summary(args: argparse.Namespace, params: Params) -> int:
    """Print parameters and MACs of every variant, and of every AFE layers x kernel setting."""
    from sanet.model.cost import format_costs, model_costs  # imports torch: only when this command runs

    height, width = (args.height or params.input.height), (args.width or params.input.width)
    model = params.model
    print(
        f"# {model.backbone}, input {height}x{width}, AFE width {model.afe.width}, "
        f"segmentation head {model.mfe.seg_channels} channels; classifiers not counted; "
        f"sanet GMACs: mean per image over {args.batch} random images (the route is data-dependent)"
    )
    rows = model_costs(model, (height, width), args.layers, args.kernels, args.variants, batch=args.batch)
    print(format_costs(rows))
    return 0


def cmd_model_check(args: argparse.Namespace, params: Params) -> int:
    """Build the model as the parameters say, weights included: a pre-flight check before training."""
    from sanet.model.cost import count_parameters
    from sanet.model.sanet import build_model  # imports torch: only when this command runs

    model = build_model(params, num_classes=args.num_classes)
    print(
        f"{params.model.variant} on {params.model.backbone} (weights: {params.model.pretrained}): "
        f"{count_parameters(model) / 1e6:.2f} M parameters without the classifiers"
    )
    return 0


def cmd_masks(args: argparse.Namespace, params: Params) -> int:
    """Compute and store the part masks of the chosen benchmarks, print their coverage and speed; and/or overlays."""
    from sanet.masks.coverage import format_coverage
    from sanet.masks.stage import run_masks, write_masks_preview

    if args.benchmark is not None:
        report = run_masks(params, args.benchmark, root=args.root, out_dir=args.out, progress=not args.quiet)
        out = args.out if args.out is not None else params.masks.out_dir
        print(
            f"stored the part masks of {report.images} images ({len(report.folders)} image folders of "
            f"{', '.join(report.benchmarks)}) in {out}: {report.store_bytes / 1e6:.1f} MB"
        )
        print(format_coverage(report.coverage))
        print(f"images in which {report.source} found nobody (empty masks): {report.no_person}")
        if report.not_listed:
            print(f"images the keypoint file does not list (empty masks): {report.not_listed}")
        print(f"coverage written to {report.coverage_file}, its summary (the DVC metric) to {report.metrics_file}")
        print(
            f"speed: {report.images_per_second:.1f} images/s ({report.images} images in {report.seconds:.1f} s, "
            f"source {report.source}, device {report.device})"
        )
        print(f"MLflow run {report.run_id}")
    if args.preview is not None:
        path = write_masks_preview(params, args.preview, args.benchmark or "all", root=args.root, out_dir=args.out)
        print(f"wrote the mask overlays {path}")
    return 0


def cmd_train(args: argparse.Namespace, params: Params) -> int:
    """Train on data.train (resuming from the output folder's last checkpoint); exit 143 when stopped by SIGTERM."""
    from sanet.train.stage import EXIT_PREEMPTED, run_train

    result = run_train(
        params,
        out_dir=args.out,
        device=args.device,
        resume=not args.fresh,
        progress=not args.quiet,
        restart_stale=args.restart_stale,
    )
    if result.final is not None or result.interrupted or result.model_file is not None:
        print(f"sanet train: {result.summary(params.data.train)}")
    if result.run_id is not None:
        print(f"sanet train: MLflow run {result.run_id}")
    return EXIT_PREEMPTED if result.interrupted else 0


def cmd_evaluate(args: argparse.Namespace, params: Params) -> int:
    """Evaluate a trained model on one benchmark: metrics, CMC, ranked lists, routing histogram; logged to MLflow."""
    from sanet.evaluation.stage import run_evaluate

    progress = not args.quiet
    result = run_evaluate(params, args.benchmark, args.model, out_dir=args.out, device=args.device, progress=progress)
    print(f"sanet evaluate: {result.summary()}")
    return 0


def cmd_report(args: argparse.Namespace, params: Params) -> int:
    """Write the paper-comparison report (Tables 1-4) and its figures; print the benchmark table."""
    from sanet.report.stage import run_report

    result = run_report(
        params,
        eval_dir=args.eval_dir,
        train_dir=args.train_dir,
        out=args.out,
        figures_dir=args.figures,
        ablations=not args.no_ablations,
    )
    print(result.terminal_table)
    print(f"sanet report: wrote {result.path} and {len(result.figures)} figures in {args.figures}")
    return 0


def cmd_register(args: argparse.Namespace, params: Params) -> int:
    """Register the evaluated model (alias candidate) and move champion when it passes the gate."""
    from sanet.registry.stage import run_register

    result = run_register(params, model_file=args.model, eval_dir=args.eval_dir, out=args.out)
    print(f"sanet register: {result.summary()}")
    for line in result.decision.reason.splitlines():
        print(f"  {line}")
    print(f"sanet register: wrote {result.path}")
    return 0


def cmd_promote(args: argparse.Namespace, params: Params) -> int:
    """Manual override: give alias champion to a version, with the reason recorded."""
    from sanet.registry.promotion import promote

    result = promote(params, version=args.version, reason=args.reason)
    print(f"sanet promote: {result.summary()}")
    return 0


def cmd_registry_show(args: argparse.Namespace, params: Params) -> int:
    """Print the registered model's versions, aliases, gate decisions and metrics."""
    from sanet.registry.table import registry_table

    print(registry_table(params))
    return 0


def cmd_hpo(args: argparse.Namespace, params: Params) -> int:
    """An Optuna study over one search space: create it, run trials as one worker, summarise (or one of these)."""
    from sanet.hpo.stage import run_hpo

    def report(step: str, result: Any) -> None:
        if step == "create":
            print(f"sanet hpo: study {result.name} in {result.storage} (MLflow parent run {result.parent_run_id})")
        elif step == "worker":
            print(
                f"sanet hpo: worker {args.worker} ran {result.trials_run} trials of {result.study}: "
                f"{result.completed} complete, {result.pruned} pruned, {result.failed} failed"
                + (f"; {result.duplicates} repeated settings skipped" if result.duplicates else "")
            )
        else:
            best = ", ".join(f"{key}={value}" for key, value in result.best_params.items())
            print(
                f"sanet hpo: best of {result.name}: trial {result.best_trial}, validation score "
                f"{100 * result.best_value:.1f}% with {best}; wrote {result.json_path}"
            )

    run_hpo(
        params,
        args.space,
        worker=args.worker,
        trials=args.trials,
        progress=not args.quiet,
        device=args.device,
        step=args.step,
        on_step=report,
    )
    return 0


def cmd_plots(args: argparse.Namespace, params: Params) -> int:
    """Render DVC's plots as an HTML page that needs no network (vega served from the page itself)."""
    from sanet.report.plots_page import render_offline_plots

    page = render_offline_plots(out_dir=args.out, vendor_dir=args.vendor)
    print(f"sanet plots: wrote {page} (self-contained: open it in a browser, no internet needed)")
    return 0


def cmd_remote_setup(args: argparse.Namespace, params: Params) -> int:
    """Point DVC's default remote at an S3 (or S3-compatible) bucket; credentials stay in the environment."""
    from sanet.infra.s3 import configure_remote

    print(configure_remote(args.url, endpoint=args.endpoint, name=args.name, check=not args.no_check))
    return 0


def cmd_remote_check(args: argparse.Namespace, params: Params) -> int:
    """Check that the DVC remote (and the MLflow artifact store, when on S3) answer with the current credentials."""
    from sanet.infra.s3 import check_remote

    print(check_remote(params, name=args.name))
    return 0


def cmd_kfp_compile(args: argparse.Namespace, params: Params) -> int:
    """Compile the Kubeflow pipelines to YAML (pipelines/<name>.yaml by default), for the default or a given image."""
    from sanet.cluster.kubeflow import compile_pipelines

    for path in compile_pipelines(root=args.root, out_dir=args.out, image=args.image, names=args.pipeline or ()):
        print(f"sanet kfp: compiled {path}")
    return 0


def cmd_kfp_submit(args: argparse.Namespace, params: Params) -> int:
    """Start a run of a pipeline on a Kubeflow Pipelines API, with this checkout's data version by default."""
    from sanet.cluster.kubeflow import data_version, submit

    if args.data_prefix:
        source, md5 = args.data_prefix, ""
    else:
        source, md5 = data_version(args.root, args.dvc_remote)
    arguments: dict[str, object] = {"data_source": source, "data_md5": md5, "work_root": args.work_root}
    if args.override:
        arguments["overrides"] = args.override
    if args.gpus is not None:
        arguments["gpus"] = args.gpus
    if args.weights:
        arguments["weights_uri"] = args.weights
    if args.pipeline == "hpo" and args.workers is not None:
        arguments["workers"] = list(range(args.workers))
    result = submit(
        args.host,
        args.pipeline,
        arguments,
        experiment=args.experiment,
        run_name=args.run_name,
        image=args.image,
        root=args.root,
        namespace=args.namespace,
    )
    print(f"sanet kfp: started run {result.run_id} of {args.pipeline} in experiment {result.experiment!r}")
    print(f"sanet kfp: data {source}" + (f" (md5 {md5})" if md5 else ""))
    print(f"sanet kfp: watch it at {result.url}")
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

    model = sub.add_parser("model", help="the SANet model")
    model_sub = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    summary = model_sub.add_parser("summary", parents=[common], help="parameters and MACs of every variant")
    summary.add_argument("--layers", type=int, nargs="+", default=[3, 5, 7], choices=range(1, 17), metavar="N")
    summary.add_argument("--kernels", type=int, nargs="+", default=[1, 3, 5], choices=[1, 3, 5, 7, 9], metavar="K")
    summary.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT")
    summary.add_argument("--height", type=int, help="input height (default: input.height)")
    summary.add_argument("--width", type=int, help="input width (default: input.width)")
    summary.add_argument("--batch", type=int, default=2, choices=range(1, 65), metavar="B", help="images per count")
    summary.set_defaults(func=cmd_model_summary)
    check = model_sub.add_parser("check", parents=[common], help="build the model and load its weights (pre-flight)")
    check.add_argument("--num-classes", type=int, default=751, help="training identities (default 751, Market-1501)")
    check.set_defaults(func=cmd_model_check)

    masks = sub.add_parser("masks", parents=[common], help="part masks from keypoints (head, upper, lower, feet, body)")
    masks.add_argument("--benchmark", metavar="NAME|all", help="compute and store the masks of one benchmark, or all")
    masks.add_argument("--root", type=Path, help="folder holding the benchmark folders (default: data.root)")
    masks.add_argument("--out", type=Path, help="mask store folder (default: masks.out_dir)")
    masks.add_argument("--preview", type=Path, metavar="FILE.png", help="write a grid of images with their masks")
    masks.add_argument("--quiet", action="store_true", help="no progress bar")
    masks.set_defaults(func=cmd_masks)

    train = sub.add_parser(
        "train",
        parents=[common],
        help="train on data.train (resumes from the last checkpoint; runs under torchrun)",
        description="Train the model params.yaml describes. Under `torchrun --nproc_per_node=N sanet train` (or "
        "`torchrun ... -m sanet.cli train`) the global batch train.batch_size is split over the N processes.",
    )
    train.add_argument("--out", type=Path, help="output folder (default: train.out_dir)")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    train.add_argument("--quiet", action="store_true", help="no progress bars: one line per epoch instead (for logs)")
    train.add_argument(
        "--restart-stale",
        action="store_true",
        help="start over (instead of refusing) when the checkpoint has other training parameters or had finished; "
        "an unfinished one is resumed (the DVC stage uses this)",
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        parents=[common],
        help="evaluate a trained model on one benchmark (metrics, CMC, ranked lists, routing)",
    )
    evaluate.add_argument("--benchmark", required=True, metavar="NAME", help="one of " + ", ".join(BENCHMARK_NAMES))
    evaluate.add_argument(
        "--model", type=Path, required=True, metavar="CKPT", help=f"model file: {TRAIN_DIR / MODEL_FILE}"
    )
    evaluate.add_argument("--out", type=Path, help="output folder (default: reports/eval/<benchmark>)")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=cmd_evaluate)

    report = sub.add_parser("report", parents=[common], help="the paper-comparison report (reports/benchmark.md)")
    report.add_argument("--eval-dir", type=Path, default=EVAL_DIR, help="per-benchmark evaluation folders")
    report.add_argument("--train-dir", type=Path, default=TRAIN_DIR, help="training outputs")
    report.add_argument("--out", type=Path, default=REPORT_FILE, help="the Markdown report")
    report.add_argument("--figures", type=Path, default=FIGURES_DIR, help="folder for the PNG plots")
    report.add_argument("--no-ablations", action="store_true", help="skip the Table 3 / 4 search in MLflow")
    report.set_defaults(func=cmd_report)

    plots = sub.add_parser("plots", parents=[common], help="DVC plots as an HTML page that works offline")
    plots.add_argument("--out", type=Path, default=PLOTS_PAGE_DIR, help="folder for index.html")
    plots.add_argument(
        "--vendor",
        type=Path,
        default=Path("tools/plots/node_modules"),
        help="node_modules holding vega, vega-lite and vega-embed (`make plots` installs them)",
    )
    plots.set_defaults(func=cmd_plots)

    register = sub.add_parser(
        "register",
        parents=[common],
        help="register the evaluated model in MLflow (alias candidate); champion moves if it passes the gate",
    )
    register.add_argument("--model", type=Path, default=TRAIN_DIR / MODEL_FILE, help="the trained model")
    register.add_argument("--eval-dir", type=Path, default=EVAL_DIR, help="its evaluations")
    register.add_argument("--out", type=Path, default=REGISTRY_RECORD, help="the decision, as JSON")
    register.set_defaults(func=cmd_register)

    promote = sub.add_parser("promote", parents=[common], help="manual override: make a version the champion")
    promote.add_argument("--version", type=int, required=True, help="model version number")
    promote.add_argument("--reason", required=True, help="why (recorded on the version and in MLflow)")
    promote.set_defaults(func=cmd_promote)

    registry = sub.add_parser("registry", help="the MLflow model registry")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    registry_show = registry_sub.add_parser("show", parents=[common], help="versions, aliases, gate, metrics")
    registry_show.set_defaults(func=cmd_registry_show)

    hpo = sub.add_parser(
        "hpo",
        parents=[common],
        help="an Optuna study over AFE layers, AFE kernel, triplet weight, or all three (joint)",
        description="Trials train a short schedule and are scored on identities held out of data.train, never on "
        "the test benchmarks. Several `sanet hpo` processes with the same settings and storage share one study.",
    )
    hpo.add_argument("--space", required=True, choices=SPACES, help="search space")
    hpo.add_argument(
        "--step",
        choices=["all", "create", "worker", "summarise"],
        default="all",
        help="all (default): create or join the study, run trials, summarise; or one of these alone",
    )
    hpo.add_argument("--worker", type=int, default=0, help="worker index: seeds this worker's sampler (hpo.seed + N)")
    hpo.add_argument("--trials", type=int, help="study size, all workers together (default hpo.trials)")
    hpo.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available")
    hpo.add_argument(
        "--quiet", action="store_true", help="no progress bars: one line per trial epoch instead (for logs)"
    )
    hpo.set_defaults(func=cmd_hpo)

    kfp = sub.add_parser("kfp", help="Kubeflow pipelines: compile them, submit a run (docs/kubeflow.md)")
    kfp_sub = kfp.add_subparsers(dest="kfp_command", required=True, metavar="COMMAND")
    kfp_compile = kfp_sub.add_parser("compile", parents=[common], help="compile the pipelines to YAML")
    kfp_compile.add_argument("--pipeline", action="append", choices=list(PIPELINES), help="one of them (repeatable)")
    kfp_compile.add_argument("--out", type=Path, help="output folder (default pipelines/)")
    kfp_compile.add_argument("--image", help="project image REGISTRY/sanet-bench:TAG (default: components/image.py)")
    kfp_compile.add_argument("--root", type=Path, default=Path("."), help="repository root (default .)")
    kfp_compile.set_defaults(func=cmd_kfp_compile)
    kfp_submit = kfp_sub.add_parser("submit", parents=[common], help="start a pipeline run on a Kubeflow cluster")
    kfp_submit.add_argument("--host", required=True, help="Kubeflow Pipelines API, e.g. http://localhost:8080")
    kfp_submit.add_argument("--experiment", default="sanet", help="KFP experiment (default sanet)")
    kfp_submit.add_argument("--pipeline", choices=list(PIPELINES), default="benchmark", help="default benchmark")
    kfp_submit.add_argument("--work-root", required=True, help="where runs keep their files: s3://bucket/prefix")
    data_source = kfp_submit.add_mutually_exclusive_group()
    data_source.add_argument("--dvc-remote", help="DVC remote name or URL (default: .dvc/config's default remote)")
    data_source.add_argument("--data-prefix", help="a prefix holding the benchmark folders, instead of the DVC remote")
    kfp_submit.add_argument(
        "--override",
        action="append",
        metavar="KEY=VALUE",
        help="a parameter override inside the pods (repeatable; default: profile=paper)",
    )
    kfp_submit.add_argument("--gpus", type=int, help="GPUs of the training pod (default 4)")
    kfp_submit.add_argument(
        "--weights", help="the team's weights, laid out as weights/ (+ torch/hub/checkpoints/): s3://bucket/weights"
    )
    kfp_submit.add_argument("--workers", type=int, help="hpo: worker pods per study (default 4)")
    kfp_submit.add_argument("--image", help="project image REGISTRY/sanet-bench:TAG (default: components/image.py)")
    kfp_submit.add_argument("--run-name", help="run name (default: KFP's)")
    kfp_submit.add_argument("--namespace", help="Kubernetes namespace of a multi-user Kubeflow")
    kfp_submit.add_argument("--root", type=Path, default=Path("."), help="repository root (default .)")
    kfp_submit.set_defaults(func=cmd_kfp_submit)

    remote = sub.add_parser("remote", help="the S3 remote of DVC and MLflow")
    remote_sub = remote.add_subparsers(dest="remote_command", required=True, metavar="COMMAND")
    setup = remote_sub.add_parser("setup", parents=[common], help="make an S3 bucket DVC's default remote")
    setup.add_argument("--url", required=True, help="s3://bucket/prefix")
    setup.add_argument("--endpoint", help="endpoint of an S3-compatible store (MinIO, Ceph...); default AWS")
    setup.add_argument("--name", default="storage", help="remote name (default storage)")
    setup.add_argument("--no-check", action="store_true", help="do not contact the bucket")
    setup.set_defaults(func=cmd_remote_setup)
    check = remote_sub.add_parser("check", parents=[common], help="contact the remote with the current credentials")
    check.add_argument("--name", help="remote name (default: DVC's default remote)")
    check.set_defaults(func=cmd_remote_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "synth" and args.out is None and args.preview is None:
        parser.error("synth needs --out DIR, --preview FILE.png, or both")
    if args.command == "masks" and args.benchmark is None and args.preview is None:
        parser.error("masks needs --benchmark NAME|all, --preview FILE.png, or both")
    func: Callable[[argparse.Namespace, Params], int] = args.func
    try:
        params = load_params(args.params, args.overrides)
        if args.command in KERNEL_COMMANDS:  # before the command imports torch (sanet.engine.cpu_kernels)
            pin_cpu_kernels(params.train.cpu_kernels)
        return func(args, params)
    except SanetError as exc:
        print(f"sanet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and friends: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
