"""The registry commands' error: torch-free and mlflow-free, so the CLI can catch it cheaply.

Each message is written for a terminal: it names the file, key, version or URI at fault and says what to do; the
CLI prints it without a traceback.
"""

from __future__ import annotations

from sanet.infra.errors import SanetError

__all__ = ["RegistryError"]


class RegistryError(SanetError, RuntimeError):
    """`sanet register`, `sanet promote` or `sanet registry show` cannot do what was asked."""
