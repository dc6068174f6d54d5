"""Fetch the benchmark folders from the team's store: a DVC remote (the version `data.dvc` pins) or a plain prefix.

A DVC 3 remote is content-addressed: the folder `data.dvc` tracks is a manifest object `files/md5/<2>/<30>.dir`
(a JSON list of `{"md5", "relpath"}`) and every file an object `files/md5/<2>/<30>`. Reading that layout directly
needs neither the repository nor `dvc` in the pod, and every file is checked against its md5 on the way, so a
pipeline run trains on exactly the version it names. A plain prefix (`s3://bucket/reid/data`) holding the benchmark
folders is copied as it is.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from sanet.cluster.transfer import TransferStats, download, download_file, join_uri
from sanet.infra.errors import StorageError

__all__ = ["FetchResult", "dvc_object_uri", "fetch_data"]

_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class FetchResult:
    """The fetched folder, what was moved, and the benchmarks found in it."""

    root: Path
    stats: TransferStats
    benchmarks: tuple[str, ...]


def dvc_object_uri(remote: str, md5: str) -> str:
    """Where a DVC 3 remote keeps the object of `md5` (`<32 hex>` or `<32 hex>.dir`)."""
    return join_uri(remote, "files", "md5", md5[:2], md5[2:])


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_dvc(remote: str, md5: str, dest: Path) -> TransferStats:
    if not (md5.endswith(".dir") and _MD5.match(md5[:-4])):
        raise StorageError(
            f"data md5 {md5!r} is not a DVC folder hash: give the `md5` of data.dvc (32 hex digits and `.dir`)"
        )
    manifest_file = dest.parent / f".{dest.name}.manifest.json"
    try:
        download_file(dvc_object_uri(remote, md5), manifest_file)
    except StorageError as exc:
        raise StorageError(
            f"the DVC remote {remote} has no folder {md5} (was `dvc push` run after `dvc commit data.dvc`?): {exc}"
        ) from exc
    try:
        entries = json.loads(manifest_file.read_text())
        files = [(str(entry["md5"]), str(entry["relpath"])) for entry in entries]
    except (ValueError, KeyError, TypeError) as exc:
        where = dvc_object_uri(remote, md5)
        raise StorageError(f"the DVC manifest {where} is not a DVC folder listing: {exc}") from exc
    finally:
        manifest_file.unlink(missing_ok=True)
    total = 0
    for file_md5, relpath in files:
        if relpath.startswith("/") or ".." in Path(relpath).parts:
            raise StorageError(f"the DVC manifest {md5} lists a path outside the folder: {relpath!r}")
        target = dest / relpath
        if target.is_file() and _file_md5(target) == file_md5:  # a retried step keeps what it already has
            total += target.stat().st_size
            continue
        download_file(dvc_object_uri(remote, file_md5), target)
        if _file_md5(target) != file_md5:
            target.unlink()
            raise StorageError(f"{relpath} from the DVC remote {remote} does not have its md5 {file_md5}: corrupt")
        total += target.stat().st_size
    return TransferStats(len(files), total)


def fetch_data(source: str, dest: str | Path, dvc_md5: str = "") -> FetchResult:
    """Fetch the benchmark folders into `dest`: from the DVC remote `source` when `dvc_md5` is given, else a copy.

    Raises StorageError (unreachable store, a missing or corrupt object) and BenchmarkError when the result holds
    no benchmark folder of a known layout.
    """
    from sanet.data.benchmarks import available_benchmarks

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    stats = _fetch_dvc(source, dvc_md5.strip(), dest) if dvc_md5.strip() else download(source, dest)
    return FetchResult(dest, stats, tuple(available_benchmarks(dest)))  # BenchmarkError naming the layouts if none
