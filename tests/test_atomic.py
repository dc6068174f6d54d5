"""Atomic writes: a failed write leaves the old file and no temporary behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanet.infra.atomic import atomic_write


def test_writes_and_creates_parents(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "a" / "b.json", lambda f: f.write(b"{}"))
    assert target.read_bytes() == b"{}"
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def broken(handle) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
