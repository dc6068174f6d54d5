"""Folders between a pod's local disk and the team's object store, addressed by URI.

On a cluster, pipeline steps hand each other large data (the benchmark folders, the part masks, the trained model,
evaluation folders) by URI, not through Kubeflow's artifact store: a step downloads what it reads and uploads what
it writes. A URI is `s3://bucket/prefix` or a local folder (`file:///path` or a plain path), which a local run and
the tests use.

S3 goes through s3fs (aiobotocore), so that a folder of thousands of small files is not moved one request at a
time: `BATCH_SIZE` files are in flight at once (s3fs's `batch_size`; a large file's parts go `max_concurrency` at a
time), over one pool of `BATCH_SIZE` connections that the calls of a process share (`s3_filesystem`, which
`sanet.cluster.fetch` uses too). Credentials come from the environment (aiobotocore's default chain), the endpoint
of an S3-compatible store from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (checked by
`sanet.infra.s3.parse_endpoint`), and botocore's checksum settings (`sanet/__init__.py`) apply as for boto3.

What is checked (a StorageError names the URI and the file):

- Downloads: every file's size against the store's listing, and its MD5 against the object's ETag where the ETag
  is one (a single-part upload: 32 hex digits; a multipart ETag `<hex>-<parts>` is not, and is not compared).
  Buckets encrypted with SSE-KMS or SSE-C have ETags that are not MD5s: `SANET_S3_VERIFY=size` checks sizes only.
- Uploads: once every file is sent, the folder is listed again and each key must be there with its size, and with
  the local file's MD5 as its ETag under the same rule.
- Downloads are atomic per file: each goes to a temporary sibling (`.<name>.part`) and is renamed only once every
  file of the folder is checked, so a pod killed mid-download leaves no truncated file under its real name for the
  next attempt to trust; the temporary files of a transfer that fails are removed.

s3fs is imported inside the functions that need it: the CLI's start-up stays cheap.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sanet.infra.errors import StorageError
from sanet.infra.s3 import CHECKSUM_ENV, parse_endpoint, parse_s3_url

__all__ = [
    "BATCH_SIZE",
    "VERIFY_ENV",
    "TransferStats",
    "download",
    "download_file",
    "exists",
    "is_s3",
    "join_uri",
    "local_path",
    "s3_filesystem",
    "s3_path",
    "upload",
]

BATCH_SIZE = 32
"""Files in flight at once in an S3 transfer (and connections in the pool)."""

VERIFY_ENV = "SANET_S3_VERIFY"
"""`md5` (default): sizes and single-part ETags are checked; `size`: sizes only (SSE-KMS / SSE-C buckets)."""

_CHUNK = 8 * 1024 * 1024
_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")
# What aiobotocore's session reads from the environment besides the endpoint (credentials, profile, region).
_SESSION_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    *CHECKSUM_ENV,
)
_FILESYSTEMS: dict[tuple[Any, ...], Any] = {}
_FILESYSTEMS_LOCK = threading.Lock()


@dataclass(frozen=True)
class TransferStats:
    """What a transfer moved: files and bytes."""

    files: int
    bytes: int

    def __add__(self, other: TransferStats) -> TransferStats:
        return TransferStats(self.files + other.files, self.bytes + other.bytes)


@dataclass(frozen=True)
class _Remote:
    """An object of a listing: its path in s3fs's terms (`bucket/key`), size and ETag (quotes removed)."""

    path: str
    size: int
    etag: str


def is_s3(uri: str) -> bool:
    """True for `s3://...` URIs."""
    return uri.strip().startswith("s3://")


def local_path(uri: str) -> Path:
    """The folder a `file://` URI or a plain path names."""
    text = uri.strip()
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{uri!r}: a file URI names a local folder (file:///path), not host {parts.netloc!r}")
        return Path(parts.path)
    if "://" in text:
        raise StorageError(f"{uri!r}: use s3://bucket/prefix, file:///path or a local path")
    return Path(text)


def join_uri(base: str, *parts: str) -> str:
    """`base` with `parts` appended as folder names (`s3://b/p` + `x` -> `s3://b/p/x`)."""
    tail = "/".join(part.strip("/") for part in parts if part.strip("/"))
    if not tail:
        return base.rstrip("/")
    if is_s3(base) or base.startswith("file://"):
        return f"{base.rstrip('/')}/{tail}"
    return str(Path(base) / tail)


# ---- S3 through s3fs ------------------------------------------------------------------------------------------


def _endpoint() -> str | None:
    """The endpoint of the environment (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`), checked; None for AWS."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if value := os.environ.get(name, "").strip():
            try:
                return parse_endpoint(value)
            except StorageError as exc:
                raise StorageError(f"{name}: {exc}") from None
    return None


def s3_filesystem(batch_size: int = BATCH_SIZE) -> Any:
    """An s3fs filesystem: the environment's credentials and endpoint, retries, `batch_size` connections.

    No listings cache: a step lists what an earlier call (or another pod) has just written. One filesystem (one
    aiobotocore session and connection pool) serves every call of a process that sees the same endpoint,
    credential and region variables; a change of any of them, or a forked child, gets a new one.
    """
    endpoint = _endpoint()
    key = (os.getpid(), batch_size, endpoint, *(os.environ.get(name) for name in _SESSION_ENV))
    with _FILESYSTEMS_LOCK:
        if key not in _FILESYSTEMS:
            _FILESYSTEMS.clear()  # the environment changed: the old session's credentials no longer apply
            _FILESYSTEMS[key] = _new_filesystem(batch_size, endpoint)
        return _FILESYSTEMS[key]


def _new_filesystem(batch_size: int, endpoint: str | None) -> Any:
    import s3fs

    config = {"retries": {"max_attempts": 8, "mode": "standard"}, "max_pool_connections": batch_size}
    return s3fs.S3FileSystem(
        endpoint_url=endpoint, config_kwargs=config, skip_instance_cache=True, use_listings_cache=False
    )


def s3_path(uri: str) -> str:
    """`bucket/prefix` (s3fs's form of a path) of `s3://bucket/prefix`; StorageError for a malformed URI."""
    location = parse_s3_url(uri)
    return f"{location.bucket}/{location.prefix}" if location.prefix else location.bucket


def _s3_error(uri: str, exc: BaseException) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"{uri}: not found ({exc}): check the bucket and the prefix")
    if isinstance(exc, PermissionError):
        return StorageError(f"{uri}: access denied ({exc}): check the credentials and the bucket's policy")
    return StorageError(f"{uri}: {type(exc).__name__}: {exc} (check the credentials, endpoint and bucket)")


def _list_s3(fs: Any, root: str) -> dict[str, _Remote]:
    """The objects under `root/` by path relative to it (folder semantics: `a/b` does not list `a/bc`, nor `a/b`)."""
    found = fs.find(root, detail=True)
    objects = {}
    for path, info in found.items():
        if info.get("type") != "file" or not path.startswith(f"{root}/") or path.endswith("/"):
            continue
        objects[path[len(root) + 1 :]] = _Remote(path, int(info["size"]), str(info.get("ETag", "")).strip('"'))
    return objects


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check(local: Path, remote: _Remote, uri: str, name: str) -> None:
    """StorageError when `local` does not have `remote`'s size, or (where the ETag is an MD5) its MD5."""
    size = local.stat().st_size
    if size != remote.size:
        raise StorageError(f"{uri}: {name} is {size} bytes here and {remote.size} in the store: truncated or corrupt")
    if os.environ.get(VERIFY_ENV, "md5").strip().lower() == "size" or not _PLAIN_ETAG.match(remote.etag):
        return
    if (md5 := _md5(local)) != remote.etag:
        raise StorageError(
            f"{uri}: {name} has MD5 {md5} here and ETag {remote.etag} in the store: corrupt (in a bucket encrypted "
            f"with SSE-KMS or SSE-C, ETags are not MD5s: set {VERIFY_ENV}=size)"
        )


def _temporary(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}.part")


@contextmanager
def _partials(targets: Sequence[Path]) -> Iterator[list[Path]]:
    """The temporary siblings of `targets`; those still there when the block ends (an error) are removed."""
    partials = [_temporary(target) for target in targets]
    try:
        yield partials
    finally:
        for partial in partials:
            partial.unlink(missing_ok=True)


def _download_s3(uri: str, dest: Path, missing_ok: bool) -> TransferStats:
    fs, root = s3_filesystem(), s3_path(uri)
    try:
        objects = _list_s3(fs, root)
    except Exception as exc:  # s3fs raises OSError subclasses, botocore and aiohttp their own
        raise _s3_error(uri, exc) from exc
    if not objects:
        if missing_ok:
            return TransferStats(0, 0)
        raise StorageError(f"nothing under {uri}: check the URI (an earlier step writes it)")
    names = sorted(objects)
    if outside := [name for name in names if name.startswith("/") or ".." in name.split("/")]:
        raise StorageError(f"{uri}: the key {outside[0]!r} names a path outside the folder: refusing to download")
    targets = [dest / name for name in names]
    with _partials(targets) as partials:
        try:
            fs.get([objects[name].path for name in names], [str(p) for p in partials], batch_size=BATCH_SIZE)
        except Exception as exc:
            raise _s3_error(uri, exc) from exc
        for name, partial in zip(names, partials, strict=True):
            _check(partial, objects[name], uri, name)
        for partial, target in zip(partials, targets, strict=True):
            os.replace(partial, target)
    return TransferStats(len(names), sum(item.size for item in objects.values()))


def _download_file_s3(uri: str, dest: Path) -> None:
    fs, path = s3_filesystem(), s3_path(uri)
    with _partials([dest]) as (partial,):
        try:
            info = fs.info(path)
            if info.get("type") != "file":
                raise StorageError(f"{uri} is not a file: check the URI (an earlier step writes it)")
            fs.get([path], [str(partial)])  # the same path as a folder's files take
        except Exception as exc:
            raise _s3_error(uri, exc) from exc
        _check(partial, _Remote(path, int(info["size"]), str(info.get("ETag", "")).strip('"')), uri, str(dest))
        os.replace(partial, dest)


def _upload_s3(src: Path, files: list[Path], uri: str) -> TransferStats:
    fs, root = s3_filesystem(), s3_path(uri)
    names = [file.name if src.is_file() else file.relative_to(src).as_posix() for file in files]
    try:
        fs.put([str(file) for file in files], [f"{root}/{name}" for name in names], batch_size=BATCH_SIZE)
        stored = _list_s3(fs, root)
    except Exception as exc:
        raise _s3_error(uri, exc) from exc
    for name, file in zip(names, files, strict=True):
        if name not in stored:
            raise StorageError(f"{uri}: {name} was uploaded but the store does not list it")
        _check(file, stored[name], uri, name)
    return TransferStats(len(files), sum(file.stat().st_size for file in files))


def _exists_s3(uri: str) -> bool:
    fs, path = s3_filesystem(), s3_path(uri)
    try:
        if "/" not in path:  # a bucket: true when it holds anything
            return bool(fs.ls(path, detail=False))
        return bool(fs.exists(path))
    except FileNotFoundError:
        return False
    except Exception as exc:
        raise _s3_error(uri, exc) from exc


# ---- the public API -------------------------------------------------------------------------------------------


def exists(uri: str) -> bool:
    """True when `uri` names a file or a non-empty folder."""
    if is_s3(uri):
        return _exists_s3(uri)
    path = local_path(uri)
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def download(uri: str, dest: str | Path, missing_ok: bool = False) -> TransferStats:
    """Copy the folder `uri` into `dest` (created); StorageError when there is nothing there, unless `missing_ok`."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if is_s3(uri):
        return _download_s3(uri, dest, missing_ok)
    source = local_path(uri)
    if not source.is_dir() or not any(source.iterdir()):
        if missing_ok:
            return TransferStats(0, 0)
        raise StorageError(f"nothing under {uri}: check the URI (an earlier step writes it)")
    return _copy_tree(source, dest)


def download_file(uri: str, dest: str | Path) -> Path:
    """Copy the single file `uri` to the path `dest`."""
    dest = Path(dest)
    if is_s3(uri):
        _download_file_s3(uri, dest)
        return dest
    source = local_path(uri)
    if not source.is_file():
        raise StorageError(f"{uri} is not a file: check the URI (an earlier step writes it)")
    with _partials([dest]) as (partial,):
        shutil.copyfile(source, partial)
        os.replace(partial, dest)
    return dest


def upload(src: str | Path, uri: str) -> TransferStats:
    """Copy the folder (or single file) `src` to `uri`; existing objects of the same names are replaced."""
    src = Path(src)
    if not src.exists():
        raise StorageError(f"nothing to upload: {src} does not exist")
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    if is_s3(uri):
        return _upload_s3(src, files, uri) if files else TransferStats(0, 0)
    target = local_path(uri)
    if src.is_file():
        return _copy_tree(src.parent, target, only=[src])
    return _copy_tree(src, target)


def _copy_tree(source: Path, dest: Path, only: list[Path] | None = None) -> TransferStats:
    files = only if only is not None else sorted(p for p in source.rglob("*") if p.is_file())
    total = 0
    for file in files:
        target = dest / file.relative_to(source)
        with _partials([target]) as (partial,):
            with file.open("rb") as reader, partial.open("wb") as writer:
                shutil.copyfileobj(reader, writer, _CHUNK)
            os.replace(partial, target)
        total += file.stat().st_size
    return TransferStats(len(files), total)
