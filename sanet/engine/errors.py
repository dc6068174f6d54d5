"""Errors of the shared runtime, importable without torch (the CLI catches them and prints one line)."""

from __future__ import annotations

from sanet.infra.errors import SanetError

__all__ = ["CheckpointError"]


class CheckpointError(SanetError, RuntimeError):
    """A checkpoint cannot be read, is not a sanet checkpoint, or belongs to other parameters."""
