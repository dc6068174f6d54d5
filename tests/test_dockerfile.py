"""The Dockerfile's structure, read as text (there is no Docker engine here): base images pinned to the lock's torch
and CUDA, the `masks` and `sanet` targets, the runtime contract Kubeflow relies on, and .dockerignore against COPY."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from paths import REPO_ROOT

PARAMS_PATH = "/opt/sanet/params.yaml"  # what sanet/cluster/steps.py reads in a Kubeflow pod
BASE_TAG = re.compile(
    r"pytorch/pytorch:(?P<torch>\d+\.\d+\.\d+)-cuda(?P<cuda>\d+\.\d+)-cudnn(?P<cudnn>\d+)-(?P<flavor>runtime|devel)"
    r"(@sha256:[0-9a-f]{64})?"
)


def _lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / name).read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            package, version = line.split("==", 1)
            pins[canonicalize_name(package.split("[")[0].strip())] = version.split(";")[0].strip()
    return pins


RUNTIME = _lock("requirements.lock")
DEV = _lock("requirements-dev.lock")


@dataclass
class Stage:
    base: str  # an image reference or the name of an earlier stage
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)


def _instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments (and parser directives) dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def _stages(text: str | None = None) -> list[Stage]:
    stages: list[Stage] = []
    for keyword, arguments in _instructions(text if text is not None else (REPO_ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            assert len(words) == 1 or name, f"cannot read FROM {arguments}"
            stages.append(Stage(base=words[0], name=name))
        elif keyword != "ARG" or stages:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, arguments))
    return stages


STAGES = _stages()
BY_NAME = {stage.name: stage for stage in STAGES if stage.name}


def _chain(stage: Stage) -> list[Stage]:
    """The stage and the earlier stages it is built FROM, the root first."""
    chain = [stage]
    while chain[0].base in BY_NAME:
        chain.insert(0, BY_NAME[chain[0].base])
    return chain


def _effective(stage: Stage, keyword: str) -> list[str]:
    """Every argument of `keyword` in the stage's ancestry, in order (the last one wins for USER, ENTRYPOINT...)."""
    return [args for s in _chain(stage) for kw, args in s.instructions if kw == keyword]


def _env(stage: Stage) -> dict[str, str]:
    env = {}
    for args in _effective(stage, "ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"ENV {args}: use the KEY=value form"
            env[key] = value
    return env


def _external_bases() -> list[str]:
    return [stage.base for stage in STAGES if stage.base not in BY_NAME]


def _cuda_wheels_major() -> set[str]:
    """The CUDA major of the lock's nvidia wheels: nvidia-cuda-runtime's version, and every -cuNN suffix."""
    majors = {RUNTIME["nvidia-cuda-runtime"].split(".")[0]}
    majors |= {m.group(1) for name in RUNTIME if (m := re.fullmatch(r"nvidia-.+-cu(\d+)", name))}
    return majors


def test_every_base_image_is_pinned_and_matches_the_locked_torch_and_cuda() -> None:
    bases = _external_bases()
    assert bases, "no FROM an image"
    assert _cuda_wheels_major() == {"13"}, _cuda_wheels_major()  # one CUDA major in the lock
    cuda_major = _cuda_wheels_major().pop()
    for image in bases:
        assert "$" not in image, f"FROM {image}: write the tag out, so that it is pinned and checked here"
        assert not image.endswith(":latest") and (":" in image.rsplit("/", 1)[-1] or "@sha256:" in image), image
        tag = BASE_TAG.fullmatch(image)
        assert tag, f"FROM {image}: expected pytorch/pytorch:<torch>-cuda<X.Y>-cudnn<N>-runtime|devel"
        assert tag["torch"] == RUNTIME["torch"], f"{image} vs the lock's torch=={RUNTIME['torch']}"
        assert tag["cuda"].split(".")[0] == cuda_major, f"{image} vs the lock's CUDA {cuda_major} nvidia wheels"
        assert tag["cudnn"] == RUNTIME["nvidia-cudnn-cu13"].split(".")[0], f"{image} vs the lock's cudnn"
    # The build stage's wheel is loaded by the runtime stage's torch: the same image apart from runtime/devel.
    flavors = {BASE_TAG.fullmatch(image)["flavor"]: image for image in bases}
    assert set(flavors) == {"runtime", "devel"}, bases
    assert flavors["runtime"].replace("-runtime", "") == flavors["devel"].replace("-devel", "")


def test_base_images_match_the_installed_torch_build() -> None:
    """The local torch wheel (2.14.1+cu130) is the CUDA build the images carry (read from torch/version.py, which
    is faster than importing torch)."""
    version_py = Path(metadata.distribution("torch").locate_file("torch/version.py")).read_text()
    cuda = re.search(r"^cuda(?:: [^=]+)? = '([\d.]+)'$", version_py, re.M)
    if not cuda:
        pytest.skip("the installed torch is not a CUDA build")
    for image in _external_bases():
        assert BASE_TAG.fullmatch(image)["cuda"] == cuda.group(1), f"{image} vs the installed torch's CUDA {cuda[1]}"


def test_stages_masks_and_sanet_are_the_targets_and_sanet_is_the_default() -> None:
    names = [stage.name for stage in STAGES]
    assert len(names) == len(set(names)), names
    assert STAGES[-1].name == "sanet", "the last stage is what a plain `docker build .` gives: it must be `sanet`"
    assert "masks" in BY_NAME
    masks, sanet = _chain(BY_NAME["masks"]), _chain(BY_NAME["sanet"])
    assert masks[0] is sanet[0] and "-runtime" in masks[0].base, "both targets build on the runtime image"
    assert all("-devel" not in stage.base for stage in masks + sanet)
    # Only `masks` takes something from another stage (the OpenPifPaf wheel); `sanet` has no OpenPifPaf.
    assert not [args for stage in sanet for _, args in stage.instructions if re.search(r"--from=|from=", args)]
    taken = [args for stage in masks for _, args in stage.instructions if re.search(r"--from=|from=", args)]
    assert len(taken) == 1 and "openpifpaf" in taken[0] and "--no-deps" in taken[0], taken


def test_the_openpifpaf_wheel_is_built_by_the_projects_script_with_ninja() -> None:
    builders = [stage for stage in STAGES if any("tools/build_pifpaf.sh" in a for _, a in stage.instructions)]
    assert len(builders) == 1 and "-devel" in builders[0].base, [s.name for s in builders]
    builder = builders[0]
    assert "SANET_CACHE_DIR" in _env(builder) or any("SANET_CACHE_DIR=" in a for _, a in builder.instructions)
    runs = " ".join(args for kw, args in builder.instructions if kw == "RUN")
    assert f"ninja=={DEV['ninja']}" in runs, f"ninja is pinned as in requirements-dev.lock ({DEV['ninja']})"
    masks_run = " ".join(args for stage in _chain(BY_NAME["masks"]) for kw, args in stage.instructions)
    assert f"from={builder.name}" in masks_run


def test_every_stage_installs_the_lock_like_make_install() -> None:
    pip_version = re.search(r"^PIP_VERSION := (\S+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert pip_version
    for stage in STAGES:
        if stage.base in BY_NAME:
            continue  # inherits the environment
        runs = [args for kw, args in stage.instructions if kw == "RUN"]
        text = " ".join(runs)
        assert f"pip install --no-cache-dir pip=={pip_version.group(1)}" in text, stage.name
        assert "--no-deps -r requirements.lock" in text, stage.name
        assert "--no-deps --no-build-isolation ." in text, stage.name
        assert "sys.version_info[:2] == (3, 11)" in text, f"{stage.name}: the lock is resolved for CPython 3.11"
    base_runs = " ".join(args for kw, args in STAGES[0].instructions if kw == "RUN")
    assert "pip check" in base_runs


@pytest.mark.parametrize("target", ["masks", "sanet"])
def test_final_stages_keep_the_kubeflow_contract(target: str) -> None:
    stage = BY_NAME[target]
    user = _effective(stage, "USER")
    assert user, f"{target} runs as root"
    uid = user[-1].split(":")[0]
    assert uid not in {"root", "0"} and uid == "1000", user[-1]
    assert "useradd --create-home --uid 1000" in " ".join(_effective(stage, "RUN")), "uid 1000 needs a home"
    assert _effective(stage, "WORKDIR")[-1] == "/home/sanet"
    assert json.loads(_effective(stage, "ENTRYPOINT")[-1]) == ["sanet"]
    assert json.loads(_effective(stage, "CMD")[-1]) == ["--help"]
    copies = [args.split() for args in _effective(stage, "COPY")]
    assert ["params.yaml", PARAMS_PATH] in copies, f"{target} does not put params.yaml at {PARAMS_PATH}"
    env = _env(stage)
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DVC_NO_ANALYTICS"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # Kubeflow's lightweight components run `python3 -m kfp.dsl.executor_main`: the image must keep python3 on
    # PATH (the base's /opt/conda/bin) and not replace PATH.
    assert "PATH" not in env and "kfp" in RUNTIME


def _context_sources() -> list[str]:
    """Every path a COPY (or a bind mount) takes from the build context."""
    sources = []
    for stage in STAGES:
        for keyword, args in stage.instructions:
            if keyword in {"COPY", "ADD"} and "--from=" not in args:
                words = json.loads(args) if args.startswith("[") else args.split()
                sources += [w for w in words[:-1] if not w.startswith("--")]
            if keyword == "RUN":
                for mount in re.findall(r"--mount=(\S+)", args):
                    options = dict(o.split("=", 1) if "=" in o else (o, "") for o in mount.split(","))
                    if options.get("type", "bind") == "bind" and "from" not in options:
                        sources.append(options.get("source", options.get("src", ".")))
    return [os.path.normpath(source) for source in sources]


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (is_exception, regex), with Docker's rules: ** spans folders, * and ? do not."""
    patterns = []
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((negate, re.compile(regex)))
    return patterns


def _excluded(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern matching it or a parent folder wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in patterns:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_lets_in_exactly_what_the_stages_copy() -> None:
    patterns = _ignore_patterns()
    assert patterns[0] == (False, re.compile("[^/]*")), ".dockerignore must start with `*` (deny by default)"
    sources = _context_sources()
    assert {"requirements.lock", "pyproject.toml", "README.md", "sanet", "params.yaml"} <= set(sources)
    for source in sources:
        assert source != ".", "the whole build context is copied"
        tracked = subprocess.run(
            ["git", "ls-files", "--", source], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        assert tracked, f"COPY {source}: not a file of the repository"
        for path in [source, *tracked]:
            assert not _excluded(path, patterns), f"COPY {source}: .dockerignore leaves {path} out"
    allowed = [
        line[1:].strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    unused = [p for p in allowed if os.path.normpath(p) not in sources]
    assert not unused, f".dockerignore lets in what no stage copies: {unused}"


@pytest.mark.parametrize(
    "path",
    [
        "data/market1501/bounding_box_train/0001_c1s1_000151_01.jpg",
        ".venv/bin/python",
        "mlflow.db",
        "mlruns/0/meta.yaml",
        "outputs/train/model.pt",
        "weights/openpifpaf/model.pkl",
        "masks/market1501/train/index.json",
        ".git/HEAD",
        ".dvc/cache/files/md5/00/abc",
        "optuna.db",
        "reports/benchmark.md",
        "sanet/__pycache__/cli.cpython-311.pyc",
        "sanet/masks/__pycache__/pifpaf.cpython-311.pyc",
        "tools/plots/node_modules/vega/package.json",
        "tests/test_dockerfile.py",
    ],
)
def test_dockerignore_keeps_data_environments_and_caches_out(path: str) -> None:
    assert _excluded(path, _ignore_patterns())


def test_the_helpers_read_dockerfiles_and_dockerignore_like_docker() -> None:
    """The parser and matcher above, on cases whose outcome Docker documents (so the checks above mean something)."""
    patterns = [(False, re.compile("[^/]*")), (True, re.compile("sanet")), (False, re.compile("(.*/)?__pycache__"))]
    assert _excluded("anything/at/all", patterns) and not _excluded("sanet/cli.py", patterns)
    assert _excluded("sanet/__pycache__/cli.pyc", patterns) and _excluded("__pycache__/x.pyc", patterns)
    assert not _excluded("sanet", patterns)
    assert _stages("# c\nFROM a:1 AS x\nRUN a \\\n  # inner\n  b\nFROM x\n")[0].instructions == [("RUN", "a b")]


def _make_image(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REGISTRY", "TAG", "MAKEFLAGS", "MFLAGS"}}
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "image", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("args", [(), ("TAG=0.1.0",), ("REGISTRY=registry.example.com/team",)])
def test_make_image_needs_registry_and_tag(args: tuple[str, ...]) -> None:
    result = _make_image(*args)
    assert result.returncode != 0
    assert "make image needs REGISTRY and TAG" in result.stderr, result.stderr
    assert "docker" not in result.stdout


def test_make_image_builds_and_pushes_both_targets() -> None:
    result = _make_image("REGISTRY=registry.example.com/team", "TAG=0.1.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == [
        "docker build --target sanet -t registry.example.com/team/sanet-bench:0.1.0 .",
        "docker build --target masks -t registry.example.com/team/sanet-bench:0.1.0-masks .",
        "docker push registry.example.com/team/sanet-bench:0.1.0",
        "docker push registry.example.com/team/sanet-bench:0.1.0-masks",
    ]
    assert re.search(r"^\.PHONY:.* image ", (REPO_ROOT / "Makefile").read_text(), re.M)
