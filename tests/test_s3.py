"""S3 for DVC's remote and MLflow's artifact store, against moto's S3 server on 127.0.0.1 (tests/s3_server.py).

Credentials are fake and come from the environment only. Every request the server receives is recorded, so the
checksum settings are checked on the wire: no `x-amz-checksum-*` / `x-amz-sdk-checksum-algorithm` header on
uploads, no `x-amz-checksum-mode` on downloads, from `dvc push` / `dvc pull` (subprocesses) and from MLflow.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import mlflow
import pytest
from botocore.config import Config
from paths import PARAMS_FILE
from s3_server import LocalS3

from sanet.cli import main
from sanet.config import Params, resolve
from sanet.infra.errors import StorageError
from sanet.infra.s3 import CHECKSUM_ENV, check_remote, configure_remote, parse_endpoint, parse_s3_url
from sanet.infra.tracking import log_file, start_run

DVC = str(Path(sys.executable).parent / "dvc")
_names = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    try:
        server = LocalS3().start()
    except (ImportError, OSError) as exc:  # only when moto's server truly cannot run here
        pytest.skip(f"moto's S3 server cannot start on 127.0.0.1: {exc}")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials in the environment and nothing else: no profile, no config file, no instance metadata."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "MLFLOW_S3_")) or name == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in CHECKSUM_ENV:  # what sanet/__init__.py and the Makefile set
        monkeypatch.setenv(name, "when_required")


@pytest.fixture
def bucket(s3: LocalS3) -> str:
    name = f"sanet-test-{next(_names)}"
    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def dvc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare DVC repository (just `.dvc/config`) as the working directory: enough for DVC's config API."""
    root = tmp_path / "repo"
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    monkeypatch.chdir(root)
    return root


def _run(cwd: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _digests(root: Path, names: list[str]) -> dict[str, str]:
    files = [p for name in names for p in sorted([root / name, *(root / name).rglob("*")]) if p.is_file()]
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ---- checksums ------------------------------------------------------------------------------------------------


def test_importing_sanet_makes_checksums_when_required_for_boto3_unless_the_user_chose() -> None:
    code = (
        "import sanet, boto3; c = boto3.client('s3', region_name='us-east-1'); "
        "print(c.meta.config.request_checksum_calculation, c.meta.config.response_checksum_validation)"
    )
    env = {k: v for k, v in os.environ.items() if k not in CHECKSUM_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["when_required", "when_required"]
    env["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_supported"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["when_supported", "when_required"]


def test_the_server_sees_checksum_headers_only_when_botocore_sends_them(s3: LocalS3, bucket: str) -> None:
    # The control for the wire-level checks below: botocore's own default does send them, and they are recorded.
    default = boto3.client("s3", endpoint_url=s3.endpoint, config=Config(request_checksum_calculation="when_supported"))
    start = len(s3.requests)
    default.put_object(Bucket=bucket, Key="with", Body=b"x" * 1000)
    assert s3.uploads()[-1].checksum_headers(), "botocore's default should send a checksum"
    boto3.client("s3", endpoint_url=s3.endpoint).put_object(Bucket=bucket, Key="without", Body=b"x" * 1000)
    assert s3.uploads()[-1].path.endswith("/without")
    assert not s3.uploads()[-1].checksum_headers()
    assert len(s3.requests) == start + 2


# ---- the DVC round trip ---------------------------------------------------------------------------------------

_STAGE_SCRIPT = """
import json, pathlib
data = sorted(p for p in pathlib.Path("data").rglob("*") if p.is_file())
out = pathlib.Path("out"); (out / "parts").mkdir(parents=True, exist_ok=True)
(out / "sizes.txt").write_text("".join(f"{p.as_posix()} {p.stat().st_size}\\n" for p in data))
(out / "parts" / "reversed.bin").write_bytes(b"".join(p.read_bytes() for p in data)[::-1])
pathlib.Path("result.json").write_text(json.dumps({"files": len(data)}))
"""


def test_dvc_push_then_pull_into_an_empty_cache_gives_back_every_byte(
    s3: LocalS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    rng = random.Random(7)
    files = {
        "data/labels.csv": b"id,camera\n1,c1\n2,c2\n",
        "data/empty.txt": b"",
        "data/images/0001.jpg": rng.randbytes(70_000),
        "data/images/nested/deeper/0002.bin": rng.randbytes(3_000),
    }
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(content)
    (repo / "make_out.py").write_text(_STAGE_SCRIPT)
    (repo / "dvc.yaml").write_text(
        textwrap.dedent(f"""\
        stages:
          summarise:
            cmd: {sys.executable} make_out.py
            deps: [make_out.py, data]
            outs: [out, result.json]
        """)
    )
    _run(repo, "git", "init", "-q")
    _run(repo, DVC, "init", "-q")
    _run(repo, DVC, "add", "-q", "data")
    _run(repo, DVC, "repro", "-q")

    monkeypatch.chdir(repo)
    url = f"s3://{bucket}/dvc-store"
    assert main(["remote", "setup", "--params", str(PARAMS_FILE), "--url", url, "--endpoint", s3.endpoint + "/"]) == 0
    assert url in capsys.readouterr().out
    shared, local = (repo / ".dvc" / "config").read_text(), (repo / ".dvc" / "config.local").read_text()
    assert url in shared and "remote = storage" in shared and s3.endpoint not in shared
    assert f"endpointurl = {s3.endpoint}\n" in local
    assert not any(secret in shared + local for secret in ("testing-key-id", "testing-secret-value"))

    outputs = ["data", "out", "result.json"]
    before = _digests(repo, outputs)
    assert len(before) == 7
    assert before["data/images/0001.jpg"] == hashlib.sha256(files["data/images/0001.jpg"]).hexdigest()

    pushed_from = len(s3.requests)
    _run(repo, DVC, "push", "-q")
    uploads = [r for r in s3.requests[pushed_from:] if r.method == "PUT"]
    assert len(uploads) >= 7  # one object per distinct file, plus the .dir listings
    assert all(not r.checksum_headers() for r in uploads), [r.checksum_headers() for r in uploads]
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3.endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(key.startswith("dvc-store/files/md5/") for key in keys)

    shutil.rmtree(repo / ".dvc" / "cache")
    for name in outputs:
        path = repo / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    pulled_from = len(s3.requests)
    _run(repo, DVC, "pull", "-q")
    downloads = [r for r in s3.requests[pulled_from:] if r.method == "GET"]
    assert downloads and all(not r.checksum_headers() for r in downloads)
    assert _digests(repo, outputs) == before
    assert json.loads(_run(repo, DVC, "status", "--json")) == {}
    assert json.loads(_run(repo, DVC, "status", "--cloud", "--json")) == {}


def test_the_cluster_steps_transfers_send_no_checksum_header_either(
    s3: LocalS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sanet.cluster.transfer import download, download_file, upload

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    source = tmp_path / "out"
    (source / "parts").mkdir(parents=True)
    (source / "parts" / "a.bin").write_bytes(random.Random(3).randbytes(5_000))
    (source / "summary.json").write_text("{}")
    start = len(s3.requests)
    assert upload(source, f"s3://{bucket}/runs/1/out").files == 2
    assert download(f"s3://{bucket}/runs/1/out", tmp_path / "back").files == 2
    assert download_file(f"s3://{bucket}/runs/1/out/summary.json", tmp_path / "one.json").read_text() == "{}"
    sent = s3.requests[start:]
    assert {r.method for r in sent} >= {"PUT", "GET"}
    assert all(not r.checksum_headers() for r in sent), [r.checksum_headers() for r in sent]
    assert _digests(tmp_path / "back", ["parts", "summary.json"]) == _digests(source, ["parts", "summary.json"])


# ---- MLflow's artifacts ---------------------------------------------------------------------------------------


def test_mlflow_artifacts_go_to_s3_and_come_back_intact(
    s3: LocalS3, bucket: str, template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(template_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3.endpoint)
    params = resolve(
        {
            "tracking": {
                "uri": f"sqlite:///{tmp_path}/mlflow.db",
                "experiment": "s3-artifacts",
                "artifact_location": f"s3://{bucket}/mlflow",
                "system_metrics": False,
            }
        }
    )
    payload = random.Random(3).randbytes(200_000)
    (tmp_path / "weights.bin").write_bytes(payload)
    start = len(s3.requests)
    try:
        with start_run(params, stage="test", run_name="s3", tags={}) as run:
            log_file(tmp_path / "weights.bin", artifact_path="models")
        client = boto3.client("s3", endpoint_url=s3.endpoint)
        key = f"mlflow/{run.info.run_id}/artifacts/models/weights.bin"
        assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="mlflow/")["Contents"]] == [key]
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == payload
        uploads = [r for r in s3.requests[start:] if r.method == "PUT"]
        assert uploads and all(not r.checksum_headers() for r in uploads)
        back = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="models/weights.bin", dst_path=str(tmp_path / "back")
        )
        assert Path(back).read_bytes() == payload
    finally:
        mlflow.set_tracking_uri(None)


# ---- setup and check ------------------------------------------------------------------------------------------


def _params(artifact_location: str = "") -> Params:
    return resolve({"tracking": {"artifact_location": artifact_location, "system_metrics": False}})


def test_check_remote_contacts_the_dvc_remote_and_the_mlflow_bucket(
    s3: LocalS3, bucket: str, dvc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = configure_remote(f"s3://{bucket}/dvc", endpoint=s3.endpoint, name="shared")
    assert "answers" in summary and "credentials from the environment" in summary
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3.endpoint)
    lines = check_remote(_params(f"s3://{bucket}/mlflow")).splitlines()
    assert len(lines) == 2 and all("answers" in line for line in lines)
    assert "DVC remote shared" in lines[0] and "MLflow artifact store" in lines[1]
    assert "not checked" in check_remote(_params()).splitlines()[1]
    with pytest.raises(StorageError, match="does not exist"):
        check_remote(_params("s3://no-such-bucket/mlflow"))
    with pytest.raises(StorageError, match=r"no remote named 'other'.*shared"):
        check_remote(_params(), name="other")


def test_check_remote_refuses_credentials_in_dvc_config(s3: LocalS3, bucket: str, dvc_dir: Path) -> None:
    configure_remote(f"s3://{bucket}/dvc", endpoint=s3.endpoint, check=False)
    local = dvc_dir / ".dvc" / "config.local"
    local.write_text(local.read_text() + "    secret_access_key = hunter2\n")
    with pytest.raises(StorageError, match=r"config\.local") as caught:
        check_remote(_params())
    assert "secret_access_key" in str(caught.value) and "hunter2" not in str(caught.value)


def test_setup_without_endpoint_drops_the_local_one_and_keeps_no_credentials(dvc_dir: Path) -> None:
    configure_remote("s3://bucket-one/a", endpoint="http://127.0.0.1:9000", check=False)
    assert "endpointurl" in (dvc_dir / ".dvc" / "config.local").read_text()
    summary = configure_remote("s3://bucket-two/b/", check=False)
    assert summary.startswith("DVC remote 'storage' = s3://bucket-two/b (default")
    assert "endpointurl" not in (dvc_dir / ".dvc" / "config.local").read_text()
    shared = (dvc_dir / ".dvc" / "config").read_text()
    assert "url = s3://bucket-two/b\n" in shared and "bucket-one" not in shared


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x", "not an S3 URL"),
        ("s3://", "not a valid bucket name"),
        ("s3://Upper_Case", "not a valid bucket name"),
        ("s3://bucket/data?versionId=1", "query"),
        ("s3://bucket//data", "empty folder"),
    ],
)
def test_bad_urls_are_refused_before_anything_is_written(url: str, message: str, dvc_dir: Path) -> None:
    with pytest.raises(StorageError, match=message):
        configure_remote(url, check=False)
    assert "remote" not in (dvc_dir / ".dvc" / "config").read_text()


def test_credentials_in_a_url_are_refused_without_being_echoed() -> None:
    for parse, text in ((parse_s3_url, "s3://key:hunter2@bucket/p"), (parse_endpoint, "http://key:hunter2@h:9000")):
        with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID") as caught:
            parse(text)
        assert "hunter2" not in str(caught.value)
    with pytest.raises(StorageError, match="not an http"):
        parse_endpoint("ftp://host")


def test_the_cli_prints_the_error_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["remote", "setup", "--params", str(PARAMS_FILE), "--url", "http://x"]) == 2
    assert "not an S3 URL" in capsys.readouterr().err


def test_an_endpoint_where_nothing_listens_fails_in_seconds_naming_it(dvc_dir: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and where nothing listens now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = (dvc_dir / ".dvc" / "config").read_text()
    started = time.monotonic()
    with pytest.raises(StorageError, match=rf"nothing answers at endpoint http://127\.0\.0\.1:{port}"):
        configure_remote("s3://bucket/data", endpoint=f"http://127.0.0.1:{port}")
    assert time.monotonic() - started < 5
    assert (dvc_dir / ".dvc" / "config").read_text() == before


def test_missing_credentials_name_the_variables_to_set(
    s3: LocalS3, bucket: str, dvc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        configure_remote(f"s3://{bucket}/data", endpoint=s3.endpoint)
