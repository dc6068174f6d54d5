"""The error of `sanet hpo`, importable without torch, optuna or mlflow (the CLI catches it and prints one line)."""

from __future__ import annotations

from sanet.infra.errors import SanetError

__all__ = ["HPOError"]


class HPOError(SanetError, RuntimeError):
    """A study cannot run: an unknown space, an unusable storage, a missing study; the message says what to do."""
