"""Errors of the training stage, importable without torch (the CLI catches them and prints one line)."""

from __future__ import annotations

from sanet.infra.errors import SanetError

__all__ = ["DistributedError", "TrainingError"]


class TrainingError(SanetError, RuntimeError):
    """Training cannot start or cannot go on (the message says why and what to do)."""


class DistributedError(SanetError, RuntimeError):
    """The process environment cannot give this process a device or a process group."""
