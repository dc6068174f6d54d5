"""Cluster steps' plumbing: folders to and from URIs (local and S3), fetching data from a DVC remote, torchrun.

S3 transfers run against moto's S3 server (tests/s3_server.py). Faults are injected deterministically by wrapping
s3fs's per-file coroutines (a connection reset mid-file, a truncated or altered body), and the server counts the
requests it is handling at once, so that concurrency is seen where it matters: at the server.
The steps themselves run end to end in tests/test_kfp_local.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import s3fs
import yaml
from s3_server import LocalS3

from sanet.cluster.fetch import dvc_object_uri, fetch_data
from sanet.cluster.steps import torchrun_command
from sanet.cluster.transfer import VERIFY_ENV, download, download_file, exists, join_uri, local_path, upload
from sanet.cluster.workspace import scratch_overrides, step_overrides, step_params, weights
from sanet.data.benchmarks import BenchmarkError
from sanet.infra.errors import StorageError

BIN = Path(sys.executable).parent


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    (source / "a" / "b").mkdir(parents=True)
    (source / "a" / "b" / "x.bin").write_bytes(os.urandom(1000))
    (source / "top.txt").write_text("top")
    return source


@pytest.fixture
def s3_server() -> Iterator[LocalS3]:
    """moto's S3 server holding the bucket `team`, with the environment boto3 and s3fs read pointing at it."""
    with LocalS3() as server, pytest.MonkeyPatch.context() as env:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", VERIFY_ENV):
            env.delenv(key, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", server.endpoint)
        boto3.client("s3").create_bucket(Bucket="team")
        yield server


@pytest.fixture
def s3(s3_server: LocalS3) -> str:
    """The endpoint of `s3_server`."""
    return s3_server.endpoint


def test_join_uri_for_s3_file_and_plain_paths() -> None:
    assert join_uri("s3://team/runs/", "42", "/eval/") == "s3://team/runs/42/eval"
    assert join_uri("file:///tmp/x", "y") == "file:///tmp/x/y"
    assert join_uri("/tmp/x", "y", "z") == "/tmp/x/y/z"
    assert local_path("file:///tmp/x") == Path("/tmp/x")
    with pytest.raises(StorageError, match="s3://bucket/prefix"):
        local_path("gs://bucket/x")


@pytest.mark.parametrize("scheme", ["path", "file"])
def test_local_round_trip(folder: Path, tmp_path: Path, scheme: str) -> None:
    store = tmp_path / "store"
    uri = str(store) if scheme == "path" else f"file://{store}"
    stats = upload(folder, uri)
    assert stats.files == 2 and stats.bytes == 1003
    assert download(uri, tmp_path / "back").files == 2
    assert _tree(tmp_path / "back") == _tree(folder)
    assert exists(uri) and not exists(join_uri(uri, "nothing"))


def test_s3_round_trip_keeps_folder_semantics(folder: Path, tmp_path: Path, s3: str) -> None:
    upload(folder, "s3://team/runs/1/data")
    upload(folder / "top.txt", "s3://team/runs/1/data2")  # a sibling whose name starts like the folder's
    assert download("s3://team/runs/1/data", tmp_path / "back").files == 2
    assert _tree(tmp_path / "back") == _tree(folder)
    assert download_file("s3://team/runs/1/data2/top.txt", tmp_path / "one.txt").read_text() == "top"
    assert exists("s3://team/runs/1/data") and not exists("s3://team/runs/1/dat")
    assert not list((tmp_path / "back").rglob(".*.part"))  # no temporary file left behind


def test_a_missing_folder_is_an_error_naming_it_unless_allowed(tmp_path: Path, s3: str) -> None:
    with pytest.raises(StorageError, match="nothing under s3://team/runs/none"):
        download("s3://team/runs/none", tmp_path / "x")
    assert download("s3://team/runs/none", tmp_path / "x", missing_ok=True).files == 0
    with pytest.raises(StorageError, match="nothing under"):
        download(str(tmp_path / "absent"), tmp_path / "y")


def test_an_unknown_bucket_is_a_storage_error(tmp_path: Path, s3: str) -> None:
    with pytest.raises(StorageError, match="s3://no-such-bucket/x"):
        download("s3://no-such-bucket/x", tmp_path / "x")


@dataclass
class InFlight:
    """The most requests of each HTTP method that the S3 server was handling at the same moment."""

    most: Counter[str] = field(default_factory=Counter)
    _now: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, method: str) -> None:
        with self._lock:
            self._now[method] += 1
            self.most[method] = max(self.most[method], self._now[method])

    def leave(self, method: str) -> None:
        with self._lock:
            self._now[method] -= 1


@pytest.fixture
def in_flight(monkeypatch: pytest.MonkeyPatch) -> InFlight:
    """Count the requests moto's server handles at once; each takes 20 ms more, a round trip's worth."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    counts = InFlight()
    handle = DomainDispatcherApplication.__call__

    def counted(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        counts.enter(environ["REQUEST_METHOD"])
        try:
            time.sleep(0.02)  # requests a client sends together overlap here; one at a time never does
            return handle(self, environ, start_response)
        finally:
            counts.leave(environ["REQUEST_METHOD"])

    monkeypatch.setattr(DomainDispatcherApplication, "__call__", counted)
    return counts


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_s3_transfers_keep_many_requests_in_flight(tmp_path: Path, s3: str, in_flight: InFlight) -> None:
    rng = random.Random(0)
    source = tmp_path / "many"
    for i in range(40):
        (source / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i % 4}" / f"{i:03}.bin").write_bytes(rng.randbytes(100 + i))
    assert upload(source, "s3://team/many").files == 40
    assert download("s3://team/many", tmp_path / "back").files == 40
    assert _tree(tmp_path / "back") == _tree(source)
    assert in_flight.most["PUT"] >= 4 and in_flight.most["GET"] >= 4, dict(in_flight.most)


def _wrap_get_file(monkeypatch: pytest.MonkeyPatch, after: Callable[[str, Path], None]) -> None:
    """s3fs's per-file download, followed by `after(key, local file)` (which may raise, or damage the file)."""
    get_file = s3fs.S3FileSystem._get_file

    async def wrapped(self: Any, rpath: str, lpath: str, **kwargs: Any) -> Any:
        result = await get_file(self, rpath, lpath, **kwargs)
        after(rpath, Path(lpath))
        return result

    monkeypatch.setattr(s3fs.S3FileSystem, "_get_file", wrapped)


def test_an_interrupted_download_leaves_no_partial_file(
    folder: Path, tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(folder, "s3://team/runs/1/data")

    def reset(key: str, local: Path) -> None:
        if key.endswith("a/b/x.bin"):
            local.write_bytes(local.read_bytes()[:300])  # what had arrived when the connection went
            raise ConnectionResetError("connection reset by peer")

    with monkeypatch.context() as patch:
        _wrap_get_file(patch, reset)
        with pytest.raises(StorageError, match="s3://team/runs/1/data: ConnectionResetError"):
            download("s3://team/runs/1/data", tmp_path / "back")
        assert _files(tmp_path / "back") == []  # neither a truncated x.bin nor a .part file
        with pytest.raises(StorageError, match=r"s3://team/runs/1/data/a/b/x\.bin: ConnectionResetError"):
            download_file("s3://team/runs/1/data/a/b/x.bin", tmp_path / "one.bin")
        assert _files(tmp_path) == _files(tmp_path / "source")
    assert download("s3://team/runs/1/data", tmp_path / "back").files == 2  # the retry gets everything
    assert _tree(tmp_path / "back") == _tree(folder)


@pytest.mark.parametrize(
    ("damage", "message"),
    [(lambda data: data[:-1], "999 bytes here and 1000 in the store: truncated"), (lambda data: data[::-1], "corrupt")],
    ids=["truncated", "altered"],
)
def test_a_damaged_download_is_refused_and_not_kept(
    folder: Path,
    tmp_path: Path,
    s3: str,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[bytes], bytes],
    message: str,
) -> None:
    upload(folder, "s3://team/runs/1/data")

    def spoil(key: str, local: Path) -> None:
        if key.endswith("a/b/x.bin"):
            local.write_bytes(damage(local.read_bytes()))

    _wrap_get_file(monkeypatch, spoil)
    with pytest.raises(StorageError, match=f"s3://team/runs/1/data: a/b/x.bin .*{message}"):
        download("s3://team/runs/1/data", tmp_path / "back")
    assert _files(tmp_path / "back") == []
    with pytest.raises(StorageError, match=f"a/b/x.bin: .*one.bin .*{message}"):
        download_file("s3://team/runs/1/data/a/b/x.bin", tmp_path / "one.bin")
    assert not (tmp_path / "one.bin").exists() and not (tmp_path / ".one.bin.part").exists()


def test_sizes_only_where_etags_are_not_md5s(
    folder: Path, tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(folder, "s3://team/runs/1/data")
    _wrap_get_file(monkeypatch, lambda key, local: local.write_bytes(local.read_bytes()[::-1]))
    monkeypatch.setenv(VERIFY_ENV, "size")  # an SSE-KMS bucket: the ETag is no MD5, the size still is checked
    assert download("s3://team/runs/1/data", tmp_path / "back").files == 2


def test_an_upload_the_store_holds_differently_is_refused(
    folder: Path, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_file = s3fs.S3FileSystem._put_file

    async def swapped(self: Any, lpath: str, rpath: str, **kwargs: Any) -> Any:
        if not lpath.endswith("top.txt"):
            return await put_file(self, lpath, rpath, **kwargs)
        bucket, key, _ = self.split_path(rpath)
        return await self._call_s3("put_object", Bucket=bucket, Key=key, Body=b"tip")  # same size, other bytes

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", swapped)
    with pytest.raises(StorageError, match=r"s3://team/up: top\.txt has MD5 .* corrupt"):
        upload(folder, "s3://team/up")


@pytest.fixture(scope="module")
def dvc_remote(tiny_synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """The tiny synthetic benchmark pushed by the real `dvc` to a local remote: (remote, md5 of data/, data/)."""
    project = tmp_path_factory.mktemp("dvcproject")
    remote = tmp_path_factory.mktemp("remote")
    shutil.copytree(tiny_synth_root, project / "data")
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for args in (
        ["dvc", "init", "--no-scm", "-q"],
        ["dvc", "remote", "add", "-d", "team", str(remote)],
        ["dvc", "add", "-q", "data"],
        ["dvc", "push", "-q"],
    ):
        done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    md5 = str(yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"])
    return remote, md5, project / "data"


def test_fetch_from_a_dvc_remote_gives_the_pinned_folder(dvc_remote: tuple[Path, str, Path], tmp_path: Path) -> None:
    remote, md5, data = dvc_remote
    result = fetch_data(str(remote), tmp_path / "data", dvc_md5=md5)
    assert _tree(tmp_path / "data") == _tree(data)
    assert result.stats.files == len(_tree(data))
    assert "market1501" in result.benchmarks and "partial_ilids_p" in result.benchmarks
    again = fetch_data(str(remote), tmp_path / "data", dvc_md5=md5)  # a retried step keeps what it has
    assert again.stats.files == result.stats.files


def test_a_corrupt_object_in_the_remote_is_named(dvc_remote: tuple[Path, str, Path], tmp_path: Path) -> None:
    remote, md5, _ = dvc_remote
    manifest = json.loads(local_path(dvc_object_uri(str(remote), md5)).read_text())
    victim = manifest[0]
    copy = tmp_path / "remote"
    upload(remote, str(copy))
    local_path(dvc_object_uri(str(copy), victim["md5"])).write_bytes(b"not the image")
    with pytest.raises(StorageError, match=f"{victim['relpath']} .* corrupt"):
        fetch_data(str(copy), tmp_path / "data", dvc_md5=md5)


def test_a_wrong_md5_names_data_dvc(dvc_remote: tuple[Path, str, Path], tmp_path: Path) -> None:
    remote, _, _ = dvc_remote
    with pytest.raises(StorageError, match=r"md5` of data\.dvc"):
        fetch_data(str(remote), tmp_path / "data", dvc_md5="c36a796b")
    with pytest.raises(StorageError, match="dvc push"):
        fetch_data(str(remote), tmp_path / "data", dvc_md5="0" * 32 + ".dir")


def test_a_dvc_remote_on_s3_is_fetched_concurrently_and_every_object_checked(
    dvc_remote: tuple[Path, str, Path], tmp_path: Path, s3: str, in_flight: InFlight
) -> None:
    remote, md5, data = dvc_remote
    upload(remote, "s3://team/dvc")
    result = fetch_data("s3://team/dvc", tmp_path / "data", dvc_md5=md5)
    assert _tree(tmp_path / "data") == _tree(data) and result.stats.files == len(_tree(data))
    assert in_flight.most["GET"] >= 4, dict(in_flight.most)

    manifest = json.loads(local_path(dvc_object_uri(str(remote), md5)).read_text())
    victim = manifest[0]
    gone = next(entry for entry in manifest if entry["md5"] != victim["md5"])
    client = boto3.client("s3")

    def key(entry: dict[str, str]) -> str:
        return dvc_object_uri("s3://team/dvc", entry["md5"]).removeprefix("s3://team/")

    client.put_object(Bucket="team", Key=key(victim), Body=b"not the image")
    with pytest.raises(
        StorageError, match=f"{re.escape(victim['relpath'])} from the DVC remote s3://team/dvc .* corrupt"
    ):
        fetch_data("s3://team/dvc", tmp_path / "fresh", dvc_md5=md5)
    assert _files(tmp_path / "fresh") == []  # nothing is put in place before every object is checked
    assert not list(tmp_path.glob(".fresh.objects-*"))  # nor is the temporary object database left behind

    client.put_object(Bucket="team", Key=key(victim), Body=(data / victim["relpath"]).read_bytes())
    client.delete_object(Bucket="team", Key=key(gone))
    with pytest.raises(StorageError, match=f"{re.escape(gone['relpath'])} .* missing from the DVC remote"):
        fetch_data("s3://team/dvc", tmp_path / "fresh", dvc_md5=md5)


def test_a_prefix_without_benchmarks_is_refused(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="holds none of the known dataset folders"):
        fetch_data(str(folder), tmp_path / "data")


@pytest.mark.parametrize(("gpus", "nproc", "device"), [(0, 1, "cpu"), (1, 1, "cuda"), (8, 8, "cuda")])
def test_training_runs_under_torchrun_with_one_process_per_gpu(gpus: int, nproc: int, device: str) -> None:
    command = torchrun_command("/opt/sanet/params.yaml", ["profile=paper"], Path("/scratch/train"), gpus)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    assert command[5:8] == ["-m", "sanet.cli", "train"]
    assert command[command.index("--device") + 1] == device
    assert command[-2:] == ["--set", "profile=paper"]


def test_scratch_paths_win_over_the_callers_overrides(tmp_path: Path) -> None:
    overrides = scratch_overrides(["data.root=/elsewhere", "model.afe.layers=3"], tmp_path)
    assert overrides[:2] == ["data.root=/elsewhere", "model.afe.layers=3"]
    assert f"data.root={tmp_path / 'data'}" in overrides[2:]  # applied after, so it wins
    assert f"masks.out_dir={tmp_path / 'masks'}" in overrides


def test_relative_weight_paths_point_into_the_scratch_folder(params_file: Path, tmp_path: Path) -> None:
    overrides = step_overrides(str(params_file), ["profile=paper", "model.pretrained=weights/reid.pth"], tmp_path)
    params = step_params(str(params_file), ["profile=paper", "model.pretrained=weights/reid.pth"], tmp_path)
    assert Path(params.masks.openpifpaf.checkpoint).parent == tmp_path / "weights" / "openpifpaf"
    assert params.model.pretrained == str(tmp_path / "weights" / "reid.pth")
    assert params.data.root == str(tmp_path / "data")
    assert f"model.pretrained={tmp_path / 'weights' / 'reid.pth'}" in overrides  # what torchrun's processes get
    untouched = step_params(str(params_file), ["profile=paper"], tmp_path)
    assert untouched.model.pretrained == "imagenet"  # torchvision's file, found through TORCH_HOME


def test_weights_come_from_the_teams_store_and_torch_home_follows(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "openpifpaf").mkdir(parents=True)
    (store / "openpifpaf" / "model.pkl").write_bytes(b"checkpoint")
    (store / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (store / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth").write_bytes(b"weights")
    before = os.environ.get("TORCH_HOME")
    with weights(str(store), tmp_path / "scratch") as folder:
        assert folder == tmp_path / "scratch" / "weights"
        assert (folder / "openpifpaf" / "model.pkl").read_bytes() == b"checkpoint"
        assert os.environ["TORCH_HOME"] == str(folder / "torch")
    assert os.environ.get("TORCH_HOME") == before
    with weights("", tmp_path / "scratch") as nothing:
        assert nothing is None
