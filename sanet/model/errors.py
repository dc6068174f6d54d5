"""The model package's expected failures, importable without torch (the CLI catches them at start-up cost zero)."""

from __future__ import annotations

from sanet.infra.errors import SanetError


class WeightsError(SanetError, RuntimeError):
    """Backbone weights that cannot be used: a missing file (named, with where to put it) or mismatched keys."""
