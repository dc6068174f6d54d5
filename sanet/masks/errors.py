"""Errors of the part-mask stage (torch-free, so that the CLI can catch them without importing OpenPifPaf)."""

from __future__ import annotations

from sanet.infra.errors import SanetError


class MasksError(SanetError, ValueError):
    """An expected failure of the mask stage (missing keypoint file or checkpoint, bad store); one clear message."""


class PifPafCheckpointError(MasksError):
    """The OpenPifPaf checkpoint is missing, unreadable, or holds classes that are not allowed to be unpickled."""


class PifPafMissingError(MasksError):
    """OpenPifPaf (the openpifpaf-vita package) is not installed."""
