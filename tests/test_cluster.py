"""Cluster steps' plumbing: folders to and from URIs (local and S3), fetching data from a DVC remote, torchrun.

The steps themselves run end to end in tests/test_kfp_local.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from s3_server import LocalS3

from sanet.cluster.fetch import dvc_object_uri, fetch_data
from sanet.cluster.steps import torchrun_command
from sanet.cluster.transfer import download, download_file, exists, join_uri, local_path, upload
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
def s3() -> Iterator[str]:
    """A bucket on moto's S3 server, with the environment boto3 reads pointing at it."""
    with LocalS3() as server, pytest.MonkeyPatch.context() as env:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(key, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", server.endpoint)
        boto3.client("s3").create_bucket(Bucket="team")
        yield server.endpoint


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
