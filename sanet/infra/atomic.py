"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

Every stage writes its outputs through `atomic_write` (a temporary file beside the target, then a rename), so an
interrupted run leaves no truncated artefact for DVC or the next stage to pick up.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` through `write(binary_file)` into a temporary file in the same folder, then rename it into place.

    Parent folders are created. On any error the temporary file is removed and the old `path`, if any, is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make results unreadable to other users of a shared machine
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
