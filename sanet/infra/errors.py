"""`SanetError`, the base of every error the project raises on purpose, and the errors of the synth, evaluate,
report, plots and remote commands.

Each message is written for a terminal: it says what is wrong and what to do. The CLI catches `SanetError` once and
prints its message in one line, without a traceback (exit status 2). Every subclass keeps its own name and, where
callers relied on it, a builtin base too (`ValueError` for bad input, `RuntimeError` for a failed run). Torch-free:
the stages' error modules import this one, and the CLI imports them before anything heavy.
"""

from __future__ import annotations

__all__ = ["EvaluationError", "OverwriteError", "PlotsError", "ReportError", "SanetError", "StorageError"]


class SanetError(Exception):
    """An error of the project (bad parameters, data, files, stores or state), with a message that says what to do."""


class OverwriteError(SanetError, ValueError):
    """`sanet synth`: the output folder holds data that is not a synthetic benchmark; refusing to replace it."""


class EvaluationError(SanetError, RuntimeError):
    """`sanet evaluate` cannot run: a missing or unreadable model file, an unknown benchmark, a model/data mismatch."""


class ReportError(SanetError, RuntimeError):
    """`sanet report` cannot run: missing or malformed evaluation results."""


class PlotsError(SanetError, RuntimeError):
    """`sanet plots` cannot render: the vendored JavaScript is missing, or DVC failed to render the plots."""


class StorageError(SanetError, RuntimeError):
    """The S3 remote or artifact store is misconfigured or unreachable."""
