"""Setting an environment variable for one block: what child processes and libraries that read the environment
(MLflow, torchvision, the components' image) see while a step runs, restored afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["temporary_env"]


@contextmanager
def temporary_env(name: str, value: str | None) -> Iterator[None]:
    """`name` = `value` for the block only (`value` None or empty: leave the environment as it is)."""
    if not value:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
