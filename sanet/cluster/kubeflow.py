"""`sanet kfp compile` and `sanet kfp submit`: the Kubeflow pipelines of `pipelines/`, compiled and submitted.

The pipelines and components are modules of the repository (`pipelines/`, `components/`), not of the `sanet`
package: they are imported from the repository root given here. The project image they run is chosen when they
are imported (`components.image` reads `SANET_IMAGE`), so a compile for another image imports them afresh.

Submitting compiles the pipeline from the code of the checkout (never a stale YAML) and passes the data version:
by default the DVC remote of `.dvc/config` and the `md5` that `data.dvc` pins, so a cluster run trains on exactly
the data of the commit it was submitted from.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sanet.contracts.pipelines import PIPELINES
from sanet.infra.envvars import temporary_env
from sanet.infra.errors import SanetError

__all__ = [
    "PIPELINES",
    "KubeflowError",
    "SubmitResult",
    "compile_pipelines",
    "data_version",
    "load_pipeline",
    "submit",
]


class KubeflowError(SanetError, RuntimeError):
    """A pipeline cannot be compiled or submitted; the message says why and what to do."""


def load_pipeline(name: str, root: str | Path = ".", image: str | None = None) -> Callable[..., Any]:
    """The pipeline function `name` of the repository at `root`, its components bound to `image` (or the default)."""
    if name not in PIPELINES:
        raise KubeflowError(f"unknown pipeline {name!r}: one of {', '.join(PIPELINES)}")
    root = Path(root).resolve()
    if not (root / "pipelines").is_dir() or not (root / "components").is_dir():
        raise KubeflowError(f"{root} holds no pipelines/ and components/: run from the repository root (or --root)")
    module_name, function = PIPELINES[name]
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("components", "pipelines")]:
        del sys.modules[loaded]  # the image is read when the components are defined: import them afresh
    sys.path.insert(0, str(root))
    try:
        with temporary_env("SANET_IMAGE", image):
            module = importlib.import_module(module_name)
    finally:
        sys.path.remove(str(root))
    return getattr(module, function)


def compile_pipelines(
    root: str | Path = ".", out_dir: str | Path | None = None, image: str | None = None, names: Sequence[str] = ()
) -> list[Path]:
    """Compile the pipelines (`names`, default all) to `<out_dir>/<name>.yaml` (default `<root>/pipelines`)."""
    from kfp import compiler

    out = Path(out_dir) if out_dir is not None else Path(root) / "pipelines"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or list(PIPELINES):
        pipeline = load_pipeline(name, root, image)
        path = out / f"{name}.yaml"
        partial = path.with_name(f".{name}.partial.yaml")
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(partial))
        partial.replace(path)
        written.append(path)
    return written


def data_version(root: str | Path = ".", remote: str | None = None) -> tuple[str, str]:
    """(DVC remote URL, md5 of the data folder) of the repository at `root`: what a cluster run fetches.

    `remote` names a remote of `.dvc/config` or is a URL; None takes the default remote.
    """
    import yaml

    root = Path(root)
    pin = root / "data.dvc"
    if not pin.is_file():
        raise KubeflowError(f"{pin} not found: run from the repository root, or pass --data-prefix for plain data")
    md5 = str(yaml.safe_load(pin.read_text())["outs"][0]["md5"])
    if remote and "://" in remote:
        return remote, md5
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"))
    name = remote or config["core"].get("remote")
    if not name:
        raise KubeflowError(
            "DVC has no default remote: `make remote URL=s3://bucket/prefix` (and `dvc push`), or pass "
            "--dvc-remote s3://... or --data-prefix s3://..."
        )
    if name not in config["remote"]:
        raise KubeflowError(f"DVC has no remote {name!r}: one of {', '.join(config['remote']) or 'none'}")
    return str(config["remote"][name]["url"]), md5


@dataclass(frozen=True)
class SubmitResult:
    """The run Kubeflow created."""

    run_id: str
    url: str
    experiment: str
    arguments: dict[str, Any]


def _check_host(host: str, timeout: float = 10.0) -> None:
    """KubeflowError, in seconds, when nothing answers at `host` (no retry loop in kfp.Client's first call)."""
    import requests

    try:
        requests.get(host.rstrip("/") + "/apis/v2beta1/healthz", timeout=timeout)
    except requests.RequestException as exc:
        raise KubeflowError(
            f"the Kubeflow Pipelines API at {host} does not answer ({type(exc).__name__}): check --host "
            "(e.g. http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)"
        ) from None


def submit(
    host: str,
    pipeline: str,
    arguments: Mapping[str, Any],
    experiment: str = "sanet",
    run_name: str | None = None,
    image: str | None = None,
    root: str | Path = ".",
    namespace: str | None = None,
) -> SubmitResult:
    """Compile `pipeline` from the checkout at `root` (for `image`) and start a run of it on the KFP API at `host`."""
    _check_host(host)
    import kfp

    with tempfile.TemporaryDirectory(prefix="sanet-kfp-") as folder:
        (package,) = compile_pipelines(root, folder, image, [pipeline])
        client = kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)
        try:
            run = client.create_run_from_pipeline_package(
                str(package), arguments=dict(arguments), run_name=run_name, experiment_name=experiment
            )
        except Exception as exc:  # kfp_server_api raises ApiException; connection errors come as urllib3's
            raise KubeflowError(f"Kubeflow refused the run at {host}: {type(exc).__name__}: {exc}") from exc
    return SubmitResult(run.run_id, f"{host.rstrip('/')}/#/runs/details/{run.run_id}", experiment, dict(arguments))
