"""Errors of the training engine, importable without torch (the CLI catches them and prints one line)."""

from __future__ import annotations

from sanet.infra.errors import SanetError

__all__ = ["CheckpointError", "DistributedError", "TrainingError"]


class TrainingError(SanetError, RuntimeError):
    """Training cannot start or cannot go on (the message says why and what to do)."""


class CheckpointError(SanetError, RuntimeError):
    """A checkpoint cannot be read, is not a sanet checkpoint, or belongs to other parameters."""


class DistributedError(SanetError, RuntimeError):
    """The process environment cannot give this process a device or a process group."""
