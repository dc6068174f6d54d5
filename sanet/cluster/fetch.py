"""Fetch the benchmark folders from the team's store: a DVC remote (the version `data.dvc` pins) or a plain prefix.

A DVC 3 remote is content-addressed: the folder `data.dvc` tracks is a manifest object (`<md5>.dir`, the list of
its files' md5s and relative paths) and every file an object named by its md5, all under `files/md5/`. That format
belongs to dvc-data, so it is read through dvc-data's object database (`HashFileDB`) over the remote's filesystem
(dvc-s3's, on the same s3fs settings as `sanet.cluster.transfer`; dvc-objects' local one for a folder): it needs
neither the repository nor `dvc` in the pod.

The manifest and the files are copied concurrently (`BATCH_SIZE` at once) into a temporary object database beside
the destination, and each object is checked there against its md5 (`HashFileDB.check`) before anything is put in
place, so a pipeline run trains on exactly the version it names; a corrupt or missing object is named by its path.
Each file then takes its place by a rename. A retried step keeps the files it already has with the right md5. A
plain prefix (`s3://bucket/reid/data`) holding the benchmark folders is copied as it is (`transfer.download`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sanet.cluster.transfer import BATCH_SIZE, TransferStats, download, is_s3, join_uri, local_path
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
    """Where a DVC 3 remote keeps the object of `md5` (`<32 hex>` or `<32 hex>.dir`), as dvc-data names it."""
    return join_uri(remote, "files", "md5", md5[:2], md5[2:])


def _remote_db(remote: str) -> Any:
    """dvc-data's read-only object database of the DVC 3 remote `remote` (its `files/md5` folder)."""
    from dvc_data.hashfile.db import HashFileDB

    if is_s3(remote):
        from dvc_s3 import S3FileSystem

        from sanet.cluster.transfer import s3_filesystem, s3_path

        fs: Any = S3FileSystem(fs=s3_filesystem(), jobs=BATCH_SIZE)
        root = s3_path(remote)
    else:
        from dvc_objects.fs.local import LocalFileSystem

        fs, root = LocalFileSystem(), str(local_path(remote).absolute())
    return HashFileDB(fs, fs.join(root, "files", "md5"), read_only=True, hash_name="md5")


def _copy_objects(remote_db: Any, cache: Any, oids: list[str]) -> dict[str, BaseException]:
    """Copy the objects `oids` from the remote into `cache` (concurrently, atomically); the failures by oid."""
    failures: dict[str, BaseException] = {}
    if oids:
        cache.add(
            [remote_db.oid_to_path(oid) for oid in oids],
            remote_db.fs,
            oids,
            batch_size=BATCH_SIZE,
            check_exists=False,
            on_error=lambda oid, exc: failures.setdefault(oid, exc),
        )
    return failures


def _copy_objects_or_fail(remote_db: Any, cache: Any, oids: list[str], remote: str) -> dict[str, BaseException]:
    """`_copy_objects`, with an error of the remote as a whole (no such bucket, no answer) as a StorageError."""
    try:
        return _copy_objects(remote_db, cache, oids)
    except Exception as exc:  # the remote's filesystem raises OSError subclasses, botocore and aiohttp their own
        raise StorageError(f"the DVC remote {remote}: {type(exc).__name__}: {exc}") from exc


def _verified(cache: Any, oid: str, failure: BaseException | None, name: str, remote: str) -> None:
    """StorageError naming `name` unless the object `oid` is in `cache` and has its md5 (dvc-data checks it)."""
    from dvc_objects.errors import ObjectFormatError

    if failure is not None and not isinstance(failure, FileNotFoundError):
        raise StorageError(
            f"{name} could not be read from the DVC remote {remote}: {type(failure).__name__}: {failure}"
        )
    try:
        cache.check(oid, check_hash=True)  # removes the object and raises when its content has another md5
    except FileNotFoundError:
        raise StorageError(
            f"{name} (md5 {oid}) is missing from the DVC remote {remote}: was `dvc push` complete?"
        ) from None
    except ObjectFormatError:
        raise StorageError(f"{name} from the DVC remote {remote} does not have its md5 {oid}: corrupt") from None


def _manifest(remote_db: Any, cache: Any, md5: str, remote: str) -> list[tuple[str, str]]:
    """The (relative path, md5) of every file of the folder `md5`, from its manifest (checked against `md5`)."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree
    from dvc_objects.errors import ObjectFormatError

    where = dvc_object_uri(remote, md5)
    failure = _copy_objects_or_fail(remote_db, cache, [md5], remote).get(md5)
    if isinstance(failure, FileNotFoundError):
        raise StorageError(
            f"the DVC remote {remote} has no folder {md5} (was `dvc push` run after `dvc commit data.dvc`?): "
            f"{where} not found"
        )
    _verified(cache, md5, failure, f"the DVC manifest {where}", remote)
    try:
        tree = Tree.load(cache, HashInfo("md5", md5))
        files = [("/".join(key), str(hash_info.value)) for key, _, hash_info in tree]
    except (ObjectFormatError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError(f"the DVC manifest {where} is not a DVC folder listing: {exc}") from exc
    for relpath, file_md5 in files:
        if relpath.startswith("/") or ".." in relpath.split("/") or not _MD5.match(file_md5):
            raise StorageError(f"the DVC manifest {md5} lists a path outside the folder or a bad md5: {relpath!r}")
    return files


def _have(target: Path, md5: str) -> bool:
    from dvc_data.hashfile.hash import file_md5

    return target.is_file() and file_md5(str(target)) == md5


def _place(cache: Any, wanted: dict[str, list[str]], dest: Path) -> None:
    """Put each checked object at its paths under `dest`: a copy for all but the last, which is renamed."""
    for oid, relpaths in wanted.items():
        source = Path(cache.oid_to_path(oid))
        for index, relpath in enumerate(relpaths):
            target = dest / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            if index < len(relpaths) - 1:
                partial = target.with_name(f".{target.name}.part")
                shutil.copyfile(source, partial)
                os.replace(partial, target)
            else:
                os.replace(source, target)


def _fetch_dvc(remote: str, md5: str, dest: Path) -> TransferStats:
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    if not (md5.endswith(".dir") and _MD5.match(md5[:-4])):
        raise StorageError(
            f"data md5 {md5!r} is not a DVC folder hash: give the `md5` of data.dvc (32 hex digits and `.dir`)"
        )
    remote_db = _remote_db(remote)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.objects-", dir=dest.parent) as scratch:
        cache = HashFileDB(LocalFileSystem(), scratch, hash_name="md5")
        files = _manifest(remote_db, cache, md5, remote)
        wanted: dict[str, list[str]] = defaultdict(list)
        for relpath, file_md5 in files:
            if not _have(dest / relpath, file_md5):  # a retried step keeps what it already has
                wanted[file_md5].append(relpath)
        failures = _copy_objects_or_fail(remote_db, cache, sorted(wanted), remote)
        for oid, relpaths in sorted(wanted.items()):
            _verified(cache, oid, failures.get(oid), relpaths[0], remote)
        _place(cache, wanted, dest)
    return TransferStats(len(files), sum((dest / relpath).stat().st_size for relpath, _ in files))


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
