"""Errors of the synth, evaluate, report, plots and remote commands: torch-free, so the CLI can catch them cheaply.

Each message is written for a terminal: it says what is wrong and what to do, and the CLI prints it without a
traceback (exit status 2).
"""

from __future__ import annotations

__all__ = ["EvaluationError", "OverwriteError", "PlotsError", "ReportError", "StorageError"]


class OverwriteError(ValueError):
    """`sanet synth`: the output folder holds data that is not a synthetic benchmark; refusing to replace it."""


class EvaluationError(RuntimeError):
    """`sanet evaluate` cannot run: a missing or unreadable model file, an unknown benchmark, a model/data mismatch."""


class ReportError(RuntimeError):
    """`sanet report` cannot run: missing or malformed evaluation results."""


class PlotsError(RuntimeError):
    """`sanet plots` cannot render: the vendored JavaScript is missing, or DVC failed to render the plots."""


class StorageError(RuntimeError):
    """The S3 remote or artifact store is misconfigured or unreachable."""
