"""MD5 digests that say which bytes a run read: one model file, or a set of data files independent of their root.

These are identities for provenance (run tags, `run.json`, the registry's gate inputs), not a security measure.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def file_md5(path: str | Path) -> str:
    """MD5 of one file's bytes (a model file: which weights an evaluation or a registry version used)."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_md5(paths: Iterable[str | Path], root: str | Path) -> str:
    """MD5 over the files a run read: sorted (path relative to `root`, bytes) pairs; the `data_md5` tag.

    It identifies the training split's content independently of where the data sits: the same files under another
    root give the same hash; a renamed, added, removed or changed file gives another. Relative `paths` are relative
    to the working directory (like any path); every path must lie under `root`. Symlinks (a DVC cache) are followed
    for the bytes but not for the names. Files are streamed in 1 MiB chunks.
    """
    base = Path(os.path.abspath(root))
    relative: set[str] = set()
    for item in paths:
        absolute = Path(os.path.abspath(item))
        try:
            relative.add(absolute.relative_to(base).as_posix())
        except ValueError:
            raise ValueError(f"{item} is not under the data root {root}") from None
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(relative):
        file = base / name
        digest.update(name.encode() + b"\0" + str(file.stat().st_size).encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
