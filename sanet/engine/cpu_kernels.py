"""Which CPU kernels torch, oneDNN, MKL and numpy run: the processor's best (`native`) or a fixed set (`avx2`).

A CPU result depends on the kernels as well as on the thread count (`sanet.engine.determinism`): torch, oneDNN
(convolutions), MKL (matrix products) and numpy (its ufuncs, such as the `exp` and `log` Optuna's samplers use) each
pick AVX-512, AVX2, ... code at start-up, and a wider vector sums in another order or uses another approximation, so
the last bits differ and a training grows them into other weights. `train.cpu_kernels: avx2` pins all four to code
every x86-64 processor with AVX2 and FMA runs: torch's AVX2 kernels (`ATEN_CPU_CAPABILITY`), oneDNN's at most AVX2
(`ONEDNN_MAX_CPU_ISA`), MKL's vendor-neutral reproducible branch (`MKL_CBWR=COMPATIBLE`, the only one MKL offers on
AMD processors) and numpy without its AVX-512 dispatch targets (`NPY_DISABLE_CPU_FEATURES`; numpy skips the targets
a processor lacks). On an AVX2 processor the torch, oneDNN and numpy pins change nothing; MKL's branch changed the
last bits of one demo training step and not its speed (docs/pipeline.md). Measured across processors:
an AVX-512 EPYC trained, evaluated and reported the same bytes as the AVX2 EPYC that wrote the demo's dvc.lock, and
without the numpy pin its Optuna study drew a triplet weight one unit in the last place away (numpy's AVX-512 `exp`).

The libraries read these variables when they first load or run a kernel, so the pin must come before numpy is
imported and before torch computes anything: the `sanet` CLI applies it right after reading params.yaml, before any
command imports either (`import sanet.cli` imports neither; tests/test_cpu_kernels.py checks it). Called from Python
after numpy or torch was loaded, it warns instead. What the pin cannot fix: oneDNN may still block a convolution by
the processor's cache sizes, so the same kernels on another processor model are likely, not certain, to give the
same bits.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import warnings
from pathlib import Path

from sanet.config import ConfigError

__all__ = ["KERNEL_ENV", "cpu_flags", "describe_cpu_kernels", "pin_cpu_kernels"]

# train.cpu_kernels value -> the environment that selects those kernels (native: whatever the processor offers)
KERNEL_ENV: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "COMPATIBLE",
        # numpy 2.x's dispatch targets above X86_V3 (AVX2, FMA3): numpy.show_runtime() lists a machine's
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    },
}
# the processor features each pinned set needs (x86 /proc/cpuinfo names)
_REQUIRED_FLAGS: dict[str, frozenset[str]] = {"avx2": frozenset({"avx2", "fma"})}
_TORCH_CAPABILITY = {"avx2": "AVX2"}  # what torch.backends.cpu.get_cpu_capability() reports once pinned


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The processor's feature flags (empty where /proc/cpuinfo has none: not Linux, or not x86)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def pin_cpu_kernels(choice: str, flags: frozenset[str] | None = None) -> dict[str, str]:
    """Select the kernels `choice` (train.cpu_kernels) names for this process and the processes it starts; returns
    the variables set.

    Raises ConfigError, before any work, when the processor lacks the features the pinned kernels need. In a process
    that loaded numpy or torch unpinned (the CLI called from Python, as the tests do) the pin cannot apply: it warns,
    sets nothing, and the run's `cpu_kernels` tag records the kernels actually used.
    """
    if choice not in KERNEL_ENV:
        raise ConfigError(f"train.cpu_kernels: unknown value {choice!r}; allowed: {', '.join(KERNEL_ENV)}")
    env = KERNEL_ENV[choice]
    if not env:
        return {}
    present = cpu_flags() if flags is None else flags
    missing = sorted(_REQUIRED_FLAGS[choice] - present)
    if missing:
        raise ConfigError(
            f"train.cpu_kernels: {choice} needs an x86-64 processor with {', '.join(sorted(_REQUIRED_FLAGS[choice]))};"
            f" this one ({platform.machine() or 'unknown'}) lacks {', '.join(missing)}: set train.cpu_kernels=native"
        )
    loaded = [name for name in ("numpy", "torch") if name in sys.modules]
    if loaded:
        unpinned = any(os.environ.get(k) != v for k, v in env.items())
        if "torch" in sys.modules:
            import torch

            unpinned = unpinned or torch.backends.cpu.get_cpu_capability() != _TORCH_CAPABILITY[choice]
        if unpinned:
            warnings.warn(
                f"train.cpu_kernels: {choice} must be chosen before numpy and torch load, but this process already "
                f"loaded {' and '.join(loaded)} with other kernels, so its CPU results may differ in the last bits "
                "from a pinned run; start it with "
                + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                + " or through the `sanet` command",
                stacklevel=2,
            )
            return {}
    os.environ.update(env)
    return dict(env)


def describe_cpu_kernels() -> str:
    """The kernels this process runs, for a run's tags and sidecar: torch's capability and the pinning variables."""
    import torch

    pinned = [f"{k}={shlex.quote(os.environ[k])}" for k in KERNEL_ENV["avx2"] if k in os.environ]
    return " ".join([torch.backends.cpu.get_cpu_capability(), *pinned])
