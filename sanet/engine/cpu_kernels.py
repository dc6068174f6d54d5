"""Which CPU kernels torch, oneDNN and MKL run: the processor's best (`native`) or a fixed set (`avx2`).

A CPU result depends on the kernels as well as on the thread count (`sanet.engine.determinism`): torch, oneDNN
(convolutions) and MKL (matrix products) each pick AVX-512, AVX2, ... code at start-up, and a wider vector sums in
another order, so the last bits differ and a training grows them into other weights (the demo's committed dvc.lock,
written on an AVX-512 processor, is not what an AVX2 processor trains). `train.cpu_kernels: avx2` pins all three to
code every x86-64 processor with AVX2 and FMA runs: torch's AVX2 kernels (`ATEN_CPU_CAPABILITY`), oneDNN's at most
AVX2 (`ONEDNN_MAX_CPU_ISA`) and MKL's vendor-neutral reproducible branch (`MKL_CBWR=COMPATIBLE`, the only one MKL
offers on AMD processors). On an AVX2 processor the first two change nothing; MKL's branch changed the last bits of
one demo training step and not its speed (README, Reproducible outputs).

The libraries read these variables when they first run a kernel, so the pin must come before torch computes
anything: the `sanet` CLI applies it right after reading params.yaml, before any command imports torch (called
from Python after torch ran, it warns instead). What the pin cannot fix: oneDNN may still block a convolution by
the processor's cache sizes, so the same kernels on another processor model are likely, not certain, to give the
same bits.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from pathlib import Path

from sanet.config import ConfigError

__all__ = ["KERNEL_ENV", "cpu_flags", "describe_cpu_kernels", "pin_cpu_kernels"]

# train.cpu_kernels value -> the environment that selects those kernels (native: whatever the processor offers)
KERNEL_ENV: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"},
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
    whose torch has already chosen other kernels (the CLI called from Python after torch ran) the pin cannot apply:
    it warns, sets nothing, and the run's `cpu_kernels` tag records the kernels actually used.
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
    if "torch" in sys.modules:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
        if capability != _TORCH_CAPABILITY[choice] or any(os.environ.get(k) != v for k, v in env.items()):
            warnings.warn(
                f"train.cpu_kernels: {choice} must be chosen before torch runs, but this process already uses "
                f"{capability} kernels, so its CPU results may differ in the last bits from a pinned run; start it "
                "with " + " ".join(f"{k}={v}" for k, v in env.items()) + " or through the `sanet` command",
                stacklevel=2,
            )
            return {}
    os.environ.update(env)
    return dict(env)


def describe_cpu_kernels() -> str:
    """The kernels this process runs, for a run's tags and sidecar: torch's capability and the pinning variables."""
    import torch

    pinned = [f"{k}={os.environ[k]}" for k in KERNEL_ENV["avx2"] if k in os.environ]
    return " ".join([torch.backends.cpu.get_cpu_capability(), *pinned])
