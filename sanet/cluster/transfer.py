"""Folders between a pod's local disk and the team's object store, addressed by URI.

On a cluster, pipeline steps hand each other large data (the benchmark folders, the part masks, the trained model,
evaluation folders) by URI, not through Kubeflow's artifact store: a step downloads what it reads and uploads what
it writes. A URI is `s3://bucket/prefix` (boto3: credentials from the environment, the endpoint of an
S3-compatible store from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`) or a local folder (`file:///path` or a plain
path), which a local run and the tests use.

Downloads are atomic per file (a temporary name, then a rename), so a pod killed mid-download leaves no truncated
file for the next attempt to trust.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sanet.infra.errors import StorageError

__all__ = ["TransferStats", "download", "download_file", "exists", "is_s3", "join_uri", "local_path", "upload"]

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class TransferStats:
    """What a transfer moved: files and bytes."""

    files: int
    bytes: int

    def __add__(self, other: TransferStats) -> TransferStats:
        return TransferStats(self.files + other.files, self.bytes + other.bytes)


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


def _s3(uri: str) -> tuple[Any, str, str]:
    """A boto3 client with retries, the bucket and the key prefix of `uri` (no trailing slash)."""
    import boto3
    from botocore.config import Config

    from sanet.infra.s3 import parse_s3_url

    location = parse_s3_url(uri)
    client = boto3.client("s3", config=Config(retries={"max_attempts": 8, "mode": "standard"}))
    return client, location.bucket, location.prefix


def _s3_error(uri: str, exc: Exception) -> StorageError:
    return StorageError(f"{uri}: {type(exc).__name__}: {exc} (check the credentials, endpoint and bucket)")


def _list_s3(client: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under `prefix/` (folder semantics: `a/b` does not list `a/bc`)."""
    folder = f"{prefix}/" if prefix else ""
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
        objects += [(item["Key"], int(item["Size"])) for item in page.get("Contents", [])]
    return [(key, size) for key, size in objects if not key.endswith("/")]


def _temporary(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}.part")


def exists(uri: str) -> bool:
    """True when `uri` names a file or a non-empty folder."""
    if is_s3(uri):
        client, bucket, prefix = _s3(uri)
        try:
            response = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=2)
        except Exception as exc:  # botocore's errors have no common public base worth importing here
            raise _s3_error(uri, exc) from exc
        keys = [item["Key"] for item in response.get("Contents", [])]
        return any(key == prefix or key.startswith(f"{prefix}/") for key in keys)
    path = local_path(uri)
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def download(uri: str, dest: str | Path, missing_ok: bool = False) -> TransferStats:
    """Copy the folder `uri` into `dest` (created); StorageError when there is nothing there, unless `missing_ok`."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if is_s3(uri):
        client, bucket, prefix = _s3(uri)
        try:
            objects = _list_s3(client, bucket, prefix)
            if not objects and not missing_ok:
                raise StorageError(f"nothing under {uri}: check the URI (an earlier step writes it)")
            total = 0
            for key, size in objects:
                target = dest / key[len(prefix) :].lstrip("/")
                partial = _temporary(target)
                client.download_file(bucket, key, str(partial))
                os.replace(partial, target)
                total += size
        except StorageError:
            raise
        except Exception as exc:
            raise _s3_error(uri, exc) from exc
        return TransferStats(len(objects), total)
    source = local_path(uri)
    if not source.is_dir() or not any(source.iterdir()):
        if missing_ok:
            return TransferStats(0, 0)
        raise StorageError(f"nothing under {uri}: check the URI (an earlier step writes it)")
    return _copy_tree(source, dest)


def download_file(uri: str, dest: str | Path) -> Path:
    """Copy the single file `uri` to the path `dest`."""
    dest = Path(dest)
    partial = _temporary(dest)
    if is_s3(uri):
        client, bucket, key = _s3(uri)
        try:
            client.download_file(bucket, key, str(partial))
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise _s3_error(uri, exc) from exc
    else:
        source = local_path(uri)
        if not source.is_file():
            raise StorageError(f"{uri} is not a file: check the URI (an earlier step writes it)")
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
        client, bucket, prefix = _s3(uri)
        total = 0
        try:
            for file in files:
                relative = file.name if src.is_file() else file.relative_to(src).as_posix()
                key = f"{prefix}/{relative}" if prefix else relative
                client.upload_file(str(file), bucket, key)
                total += file.stat().st_size
        except Exception as exc:
            raise _s3_error(uri, exc) from exc
        return TransferStats(len(files), total)
    target = local_path(uri)
    if src.is_file():
        return _copy_tree(src.parent, target, only=[src])
    return _copy_tree(src, target)


def _copy_tree(source: Path, dest: Path, only: list[Path] | None = None) -> TransferStats:
    files = only if only is not None else sorted(p for p in source.rglob("*") if p.is_file())
    total = 0
    for file in files:
        target = dest / file.relative_to(source)
        partial = _temporary(target)
        with file.open("rb") as reader, partial.open("wb") as writer:
            shutil.copyfileobj(reader, writer, _CHUNK)
        os.replace(partial, target)
        total += file.stat().st_size
    return TransferStats(len(files), total)
