"""How fast a folder of many small files goes to S3 and back: s3fs's concurrent transfers against the old loop.

Writes a 2,000-file folder (small files of 1 to 16 KiB in 20 subfolders, drawn from a fixed seed), starts moto's
S3 server (the one the tests use, tests/s3_server.py) in a child process on 127.0.0.1, and then, in the same run,
times both directions with two implementations:

* `old`: the one-request-at-a-time boto3 loop `sanet/cluster/transfer.py` had before it moved to s3fs, copied
  below as `OldBoto3Loop` (REFERENCE ONLY: the yardstick, never used by the project);
* `new`: `sanet.cluster.transfer.upload` and `download` (s3fs, `BATCH_SIZE` files in flight, sizes and MD5s
  checked).

Each measurement is repeated (`--repeat`, old and new in turn, each upload to a fresh prefix and each download into
an empty folder); the table gives the median seconds, files per second and the ratio old / new (above 1: the new
code is faster). Every download is compared byte for byte with the source once per implementation.

The server runs on the same machine, so there is no network round trip: with `--latency-ms N` it waits N ms
before answering each request, as a store across a network would, which is where concurrency matters most.

Usage: python benchmarks/transfer_speed.py [--files 2000] [--repeat 3] [--latency-ms 0] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sanet.cluster.transfer import BATCH_SIZE, download, upload
from sanet.infra.s3 import parse_s3_url

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench"


class OldBoto3Loop:
    """REFERENCE: the S3 half of `sanet/cluster/transfer.py` before s3fs, one request at a time (minimal copy).

    One boto3 client per call with 8 standard retries; a download lists the prefix, then `download_file`s each
    object to a `.part` sibling and renames it; an upload `upload_file`s each file in turn.
    """

    @staticmethod
    def _client() -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", config=Config(retries={"max_attempts": 8, "mode": "standard"}))

    @classmethod
    def download(cls, uri: str, dest: Path) -> int:
        location = parse_s3_url(uri)
        client = cls._client()
        bucket, prefix = location.bucket, location.prefix
        objects = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            objects += [item["Key"] for item in page.get("Contents", [])]
        for key in objects:
            target = dest / key[len(prefix) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            client.download_file(bucket, key, str(partial))
            os.replace(partial, target)
        return len(objects)

    @classmethod
    def upload(cls, src: Path, uri: str) -> int:
        location = parse_s3_url(uri)
        client = cls._client()
        files = sorted(p for p in src.rglob("*") if p.is_file())
        for file in files:
            client.upload_file(str(file), location.bucket, f"{location.prefix}/{file.relative_to(src).as_posix()}")
        return len(files)


def serve(latency_ms: float) -> None:
    """Child mode: moto's S3 server (tests/s3_server.py), each answer `latency_ms` late; runs until stdin closes."""
    sys.path.insert(0, str(REPO / "tests"))
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from s3_server import LocalS3

    if latency_ms > 0:
        handle = DomainDispatcherApplication.__call__

        def late(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
            time.sleep(latency_ms / 1000)
            return handle(self, environ, start_response)

        DomainDispatcherApplication.__call__ = late  # type: ignore[method-assign]
    with LocalS3() as server:
        print(server.endpoint, flush=True)
        sys.stdin.read()


def start_server(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """The child server process and its endpoint."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency-ms", str(latency_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    endpoint = child.stdout.readline().strip()
    if not endpoint.startswith("http://"):
        child.kill()
        raise SystemExit(f"moto's S3 server did not start (printed {endpoint!r})")
    return child, endpoint


def make_folder(root: Path, files: int, seed: int) -> int:
    """`files` files of 1 to 16 KiB of random bytes in 20 subfolders; returns the total size in bytes."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1024, 16 * 1024 + 1, files)
    for i, size in enumerate(sizes):
        folder = root / f"part{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.bin").write_bytes(rng.bytes(int(size)))
    return int(sizes.sum())


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def new_download(uri: str, dest: Path) -> int:
    return download(uri, dest).files


def new_upload(src: Path, uri: str) -> int:
    return upload(src, uri).files


IMPLEMENTATIONS = {
    "old": (OldBoto3Loop.upload, OldBoto3Loop.download),
    "new": (new_upload, new_download),
}


def run(args: argparse.Namespace, work: Path) -> dict[tuple[str, str], list[float]]:
    """Seconds of every repetition, by (direction, implementation)."""
    import boto3

    source = work / "source"
    total = make_folder(source, args.files, args.seed)
    expected = digests(source)
    print(f"{args.files} files, {total / 2**20:.1f} MiB in all, latency {args.latency_ms:g} ms per request")
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    times: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeat):
        for name, (put, get) in IMPLEMENTATIONS.items():
            uri = f"s3://{BUCKET}/{name}/{repeat}"
            dest = work / f"{name}-{repeat}"
            times.setdefault(("upload", name), []).append(timed(partial(put, source, uri)))
            times.setdefault(("download", name), []).append(timed(partial(get, uri, dest)))
            if repeat == 0 and digests(dest) != expected:
                raise SystemExit(f"{name}: the download differs from the source")
            shutil.rmtree(dest)
    return times


def report(times: dict[tuple[str, str], list[float]], files: int) -> None:
    print(f"\n{'direction':<10} {'old s':>8} {'new s':>8} {'old files/s':>12} {'new files/s':>12} {'old/new':>8}")
    for direction in ("upload", "download"):
        old, new = (statistics.median(times[(direction, name)]) for name in ("old", "new"))
        print(f"{direction:<10} {old:8.2f} {new:8.2f} {files / old:12.0f} {files / new:12.0f} {old / new:8.2f}")
    runs = "; ".join(
        f"{direction} {name} " + " ".join(f"{t:.2f}" for t in times[(direction, name)])
        for direction in ("upload", "download")
        for name in ("old", "new")
    )
    print(f"(medians of {len(times[('upload', 'old')])} runs; every run in s: {runs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions of each measurement (median kept)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay the server adds to every request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 files, 1 repetition: a smoke run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.serve:
        serve(args.latency_ms)
        return
    if args.quick:
        args.files, args.repeat = min(args.files, 200), 1
    child, endpoint = start_server(args.latency_ms)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    print(
        f"moto S3 server at {endpoint} (child process); new code: s3fs, {BATCH_SIZE} files in flight; "
        f"{os.cpu_count()} cores"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="transfer-speed-") as work:
            times = run(args, Path(work))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    report(times, args.files)


if __name__ == "__main__":
    main()
