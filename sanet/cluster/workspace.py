"""The working conditions every cluster step shares: a scratch folder, the parameters, the pipeline-run tag.

A pod has no repository checkout: a step reads `params_file` (the image's `/opt/sanet/params.yaml`) with the
caller's overrides, then points the data, mask and output folders at its scratch folder (`scratch_overrides`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet.cluster.transfer import download
from sanet.infra.envvars import temporary_env

if TYPE_CHECKING:
    from sanet.config import Params

__all__ = [
    "DEFAULT_PARAMS_FILE",
    "benchmark_of",
    "download_evaluations",
    "flat_numbers",
    "pipeline_run_tag",
    "scratch_folders",
    "scratch_overrides",
    "step_overrides",
    "step_params",
    "step_scratch",
    "weights",
]

DEFAULT_PARAMS_FILE = "/opt/sanet/params.yaml"
"""Where the project image keeps params.yaml (the Dockerfile copies it there)."""


@contextmanager
def step_scratch() -> Iterator[Path]:
    """A fresh folder for one step (under `SANET_SCRATCH_DIR` when set: a pod's larger volume), removed after it."""
    base = os.environ.get("SANET_SCRATCH_DIR") or None
    if base is not None:
        Path(base).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sanet-step-", dir=base) as folder:
        yield Path(folder)


def pipeline_run_tag(run: str) -> AbstractContextManager[None]:
    """`SANET_PIPELINE_RUN` = `run` for the step (the tag that groups one pipeline run's MLflow runs)."""
    return temporary_env("SANET_PIPELINE_RUN", run)


def scratch_folders(scratch: Path) -> dict[str, Path]:
    """Where a step keeps data, masks, trial outputs and reports inside its scratch folder."""
    return {
        "data": scratch / "data",
        "masks": scratch / "masks",
        "coverage": scratch / "masks_coverage.json",
        "coverage_summary": scratch / "masks_metrics.json",
        "hpo": scratch / "hpo",
        "reports": scratch / "reports",
    }


def scratch_overrides(overrides: Sequence[str], scratch: Path) -> list[str]:
    """The caller's overrides, then the scratch paths (which always win: a pod has no repository checkout)."""
    folders = scratch_folders(scratch)
    return [
        *overrides,
        f"data.root={folders['data']}",
        f"masks.out_dir={folders['masks']}",
        f"masks.coverage_file={folders['coverage']}",
        f"masks.metrics_file={folders['coverage_summary']}",
        f"hpo.out_dir={folders['hpo'] / 'trials'}",
        f"hpo.reports_dir={folders['reports'] / 'hpo'}",
    ]


def step_overrides(params_file: str, overrides: Sequence[str], scratch: Path) -> list[str]:
    """`scratch_overrides`, plus relative weight paths rebased onto the scratch folder (ConfigError when invalid).

    Relative weight paths (`masks.openpifpaf.checkpoint`, `model.pretrained` when a path) are relative to the
    repository root on a workstation; in a pod they are relative to the scratch folder, where `weights()` puts the
    team's weights.
    """
    from sanet.config import load_params

    base = scratch_overrides(overrides, scratch)
    params = load_params(params_file, base)
    rebased = []
    checkpoint = params.masks.openpifpaf.checkpoint
    if checkpoint and not Path(checkpoint).is_absolute():
        rebased.append(f"masks.openpifpaf.checkpoint={scratch / checkpoint}")
    pretrained = params.model.pretrained
    if pretrained not in ("imagenet", "none") and not Path(pretrained).is_absolute():
        rebased.append(f"model.pretrained={scratch / pretrained}")
    return [*base, *rebased]


def step_params(params_file: str, overrides: Sequence[str], scratch: Path) -> Params:
    """The validated parameters of a step: `params_file` with `step_overrides` (ConfigError naming the key)."""
    from sanet.config import load_params

    return load_params(params_file, step_overrides(params_file, overrides, scratch))


@contextmanager
def weights(weights_uri: str, scratch: Path) -> Iterator[Path | None]:
    """Put the team's model weights in the scratch folder: nothing is downloaded from the internet at run time.

    `weights_uri` mirrors a checkout's `weights/` folder (`weights/openpifpaf/<checkpoint>.pkl`, any weight file
    `model.pretrained` names) and may hold `torch/hub/checkpoints/` (torchvision's ImageNet files), which becomes
    `TORCH_HOME` for the step and the processes it starts. Empty: nothing to fetch (a profile without weights).
    """
    if not weights_uri.strip():
        yield None
        return
    folder = scratch / "weights"
    download(weights_uri, folder)
    torch_home = folder / "torch"
    with temporary_env("TORCH_HOME", str(torch_home) if torch_home.is_dir() else None):
        yield folder


def flat_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping as `a/b/c` -> value (Kubeflow metrics are flat)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat |= flat_numbers(value, name)
        elif isinstance(value, int | float):  # bool included
            flat[name] = float(value)
    return flat


def benchmark_of(eval_uri: str) -> str:
    """The benchmark an evaluation folder belongs to: its last path segment (`.../eval/market1501`)."""
    return eval_uri.rstrip("/").rsplit("/", 1)[-1]


def download_evaluations(eval_uris: Sequence[str], eval_dir: Path) -> list[str]:
    """Download evaluation folders to `<eval_dir>/<benchmark>` (the layout `sanet report` reads); their names."""
    names = []
    for uri in eval_uris:
        name = benchmark_of(uri)
        download(uri, eval_dir / name)
        names.append(name)
    return names
