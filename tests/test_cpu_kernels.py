"""train.cpu_kernels: the CLI pins torch's, oneDNN's and MKL's CPU kernels before torch runs, or refuses clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from paths import REPO_ROOT

from sanet.config import ConfigError
from sanet.engine.cpu_kernels import KERNEL_ENV, cpu_flags, describe_cpu_kernels, pin_cpu_kernels

PINNED = KERNEL_ENV["avx2"]
HAS_AVX2 = {"avx2", "fma"} <= cpu_flags()
NUMPY_AVX512 = PINNED["NPY_DISABLE_CPU_FEATURES"].split()


@pytest.fixture
def unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)


def _probe(args: list[str]) -> tuple[list[str], str]:
    """Run `sanet <args>` in a fresh interpreter; return its exit status, torch's kernels there, whether numpy runs
    AVX-512 code, and the pin variables (spaces as '+'); and what it wrote to stderr."""
    code = (
        "import os\n"
        "from sanet.cli import main\n"
        f"status = main({args!r})\n"
        "import torch\n"
        "from numpy._core._multiarray_umath import __cpu_features__ as numpy_features\n"
        "print(status, torch.backends.cpu.get_cpu_capability(), "
        f"any(numpy_features.get(t, False) for t in {NUMPY_AVX512!r}), "
        f"*[os.environ.get(k, '-').replace(' ', '+') for k in {list(PINNED)!r}])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in PINNED}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True, timeout=300
    )
    return done.stdout.split("\n")[-2].split(), done.stderr


def test_cpu_flags_reads_the_processor_features(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_native_leaves_the_kernels_to_the_processor(unpinned: None) -> None:
    assert pin_cpu_kernels("native") == {}
    assert not any(name in os.environ for name in PINNED)


def test_a_processor_without_avx2_is_refused_with_the_key_to_change(unpinned: None) -> None:
    with pytest.raises(ConfigError, match=r"train\.cpu_kernels: avx2 needs .*lacks avx2, fma.*cpu_kernels=native"):
        pin_cpu_kernels("avx2", flags=frozenset({"fpu", "sse2"}))
    assert not any(name in os.environ for name in PINNED)  # nothing half-set


def test_a_pin_after_torch_chose_its_kernels_warns_and_sets_nothing(unpinned: None) -> None:
    torch.ones(4).sum()  # torch has run: its kernels are chosen for this process
    with pytest.warns(UserWarning, match=r"before numpy and torch load.*loaded numpy and torch.*CAPABILITY=avx2"):
        assert pin_cpu_kernels("avx2", flags=frozenset({"avx2", "fma"})) == {}
    assert not any(name in os.environ for name in PINNED)  # the tags then record the kernels really used


@pytest.mark.skipif(not HAS_AVX2, reason="this processor has no AVX2")
def test_the_cli_pins_the_demo_kernels_before_a_command_runs_torch(tmp_path: Path) -> None:
    evaluate = ["evaluate", "--benchmark", "market1501", "--model", str(tmp_path / "absent.pt")]
    (status, capability, numpy_avx512, *variables), stderr = _probe([*evaluate, "--set", "profile=demo"])
    assert status == "2" and "no model file" in stderr  # the command ran, after the pin
    assert capability == "AVX2" and numpy_avx512 == "False"
    assert variables == [v.replace(" ", "+") for v in PINNED.values()]
    (status, _, numpy_avx512, *variables), stderr = _probe([*evaluate, "--set", "profile=paper"])
    assert status == "2" and "no model file" in stderr and variables == ["-"] * len(PINNED)  # native: no pin
    assert numpy_avx512 == str("avx512f" in cpu_flags())  # numpy's own choice: AVX-512 where the processor has it
    (status, _, _, *variables), _ = _probe(["config", "show", "--set", "profile=demo"])
    assert status == "0" and variables == ["-"] * len(PINNED)  # no CPU arithmetic, no pin


def test_the_numpy_pin_names_every_dispatch_target_above_avx2() -> None:
    """numpy's compiled dispatch targets beyond X86_V3 (AVX2, FMA3) are all disabled by the pin: a numpy upgrade
    that adds one (a new AVX-512 or AVX10 target) fails here instead of leaking other bits into the demo."""
    import numpy

    simd = numpy.show_config(mode="dicts")["SIMD Extensions"]
    compiled = set(simd["found"]) | set(simd["not found"])
    assert "X86_V3" in compiled  # the AVX2 code the pin keeps
    assert compiled - {"X86_V3"} == set(NUMPY_AVX512)


def test_the_cli_loads_neither_numpy_nor_torch_before_the_pin() -> None:
    """The pin must precede numpy's import (it reads NPY_DISABLE_CPU_FEATURES once): the CLI module and the
    parameters it reads first may not import numpy or torch."""
    code = (
        "import sys\n"
        "from sanet.cli import main\n"
        "from sanet.config import load_params\n"
        "load_params(overrides=['profile=demo'])\n"
        "print(*sorted(name for name in ('numpy', 'torch') if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == ""


def test_the_kernels_in_use_are_described_for_provenance() -> None:
    assert describe_cpu_kernels().split()[0] == torch.backends.cpu.get_cpu_capability()
