"""S3 for DVC's remote and MLflow's artifact store: set the remote up, and check that both answer.

Where each setting lives, and why:

- The bucket URL (`s3://bucket/prefix`) goes to the committed `.dvc/config` as DVC's default remote: every clone
  pushes to and pulls from the same place.
- The endpoint of an S3-compatible store (MinIO, Ceph, a vendor's S3) goes to `.dvc/config.local` (not committed):
  it is per machine (`http://127.0.0.1:9000` on a laptop, a service name in a cluster). A clone without it talks to
  AWS, or to `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` when set (botocore and aiobotocore both honour them).
- Credentials are never written anywhere: boto3's default chain reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
  and `AWS_SESSION_TOKEN` (or a web identity, a container or instance role) from the environment. A DVC remote
  holding `access_key_id`, `secret_access_key` or `session_token` is refused by `check_remote`.
- MLflow's artifacts: `tracking.artifact_location: s3://bucket/prefix` in params.yaml is where new experiments keep
  them; MLflow's boto3 client reads `MLFLOW_S3_ENDPOINT_URL` (else `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`),
  `MLFLOW_S3_IGNORE_TLS` and the credentials above.
- Checksums: botocore >= 1.36 sends CRC32 checksums with every upload and asks for them on every download, which
  older MinIO, Ceph RGW and some vendors reject. `AWS_REQUEST_CHECKSUM_CALCULATION` and
  `AWS_RESPONSE_CHECKSUM_VALIDATION` default to `when_required` in every `sanet` process (`sanet/__init__.py`) and,
  through the Makefile's exports, in `dvc` commands (DVC's s3fs/aiobotocore reads the same variables). An exported
  value wins; `when_supported` restores botocore's default.

boto3 and DVC are imported inside the functions that need them: the CLI's start-up stays cheap.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sanet.infra.errors import StorageError

if TYPE_CHECKING:
    from sanet.config import Params

__all__ = [
    "CHECKSUM_ENV",
    "CREDENTIAL_ENV",
    "S3Location",
    "check_bucket",
    "check_remote",
    "configure_remote",
    "parse_endpoint",
    "parse_s3_url",
]

CHECKSUM_ENV: tuple[str, ...] = ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION")
"""The botocore settings `sanet/__init__.py` defaults to `when_required` (the Makefile exports them for `dvc`)."""

CREDENTIAL_ENV: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
"""Where credentials come from (the session token only for temporary credentials)."""

_SECRET_KEYS = ("access_key_id", "secret_access_key", "session_token")
# DNS-style bucket names, plus `_` (legacy buckets and some S3-compatible stores accept it).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CREDENTIALS_HINT = (
    "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)"
)


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix ('' for the bucket's root), parsed from `s3://bucket/prefix`."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        """The normalised URL: `s3://bucket` or `s3://bucket/prefix`, without a trailing slash."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_url(url: str) -> S3Location:
    """Parse `s3://bucket[/prefix]`; StorageError for any other scheme, a bad bucket name, a query or a fragment."""
    text = url.strip()
    parts = urlsplit(text)
    usage = "write s3://bucket or s3://bucket/prefix (the endpoint of an S3-compatible store goes to --endpoint)"
    if parts.scheme != "s3":
        raise StorageError(f"remote URL {url!r} is not an S3 URL: {usage}")
    if parts.query or parts.fragment or "?" in text or "#" in text or any(c.isspace() for c in text):
        raise StorageError(f"remote URL {url!r} holds a query, a fragment or spaces: {usage}")
    if parts.username is not None or parts.password is not None:
        raise StorageError(
            f"remote URL {parts.scheme}://...@{parts.hostname} holds credentials: remove them and "
            f"{_CREDENTIALS_HINT}; they are read from the environment only"
        )
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StorageError(
            f"remote URL {url!r}: {bucket!r} is not a valid bucket name (3 to 63 lower-case letters, digits, "
            f"'.', '-' or '_', starting and ending with a letter or digit): {usage}"
        )
    prefix = parts.path[1:].rstrip("/")  # the path starts with the "/" after the bucket
    if prefix.startswith("/") or "//" in prefix:
        raise StorageError(f"remote URL {url!r}: the prefix {prefix!r} has an empty folder name ('//')")
    return S3Location(bucket, prefix)


def parse_endpoint(endpoint: str) -> str:
    """Check an S3 endpoint URL (`http(s)://host[:port][/path]`) and return it without a trailing slash."""
    text = endpoint.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError:
        port, parts = -1, None
    if parts is None or port == -1 or parts.scheme not in ("http", "https") or not parts.hostname:
        raise StorageError(
            f"endpoint {endpoint!r} is not an http(s) URL: write e.g. http://127.0.0.1:9000 or https://s3.example.org"
        )
    if parts.username is not None or parts.password is not None:
        raise StorageError(
            f"endpoint {parts.scheme}://...@{parts.hostname} holds credentials: remove them and {_CREDENTIALS_HINT}"
        )
    if parts.query or parts.fragment:
        raise StorageError(f"endpoint {endpoint!r} holds a query or a fragment: give only scheme, host, port, path")
    return text.rstrip("/")


def _credential_source(session: Any) -> str:
    """Where boto3 found credentials ('the environment', 'a shared credentials file'...); StorageError if nowhere."""
    credentials = session.get_credentials()
    if credentials is None:
        raise StorageError(f"no AWS credentials found: {_CREDENTIALS_HINT}; sanet and DVC read them from there only")
    method = getattr(credentials, "method", "") or ""
    return "the environment" if method == "env" else f"boto3's {method or 'credential chain'}"


def check_bucket(
    bucket: str, endpoint: str | None = None, region: str | None = None, timeout: float = 5.0, what: str = "bucket"
) -> str:
    """Contact `bucket` (S3 HeadBucket) with the credentials of the environment; return a one-line description.

    `endpoint` None lets boto3 choose (AWS, or `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` when set). Connect and
    read timeouts are `timeout` seconds with no retry, so an endpoint where nothing listens fails in seconds.

    Raises:
        StorageError: no credentials (names the variables to set), the endpoint does not answer, the credentials
            are refused, the bucket does not exist, or another S3 error; the message names endpoint and bucket.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
        SSLError,
    )

    session = boto3.session.Session(region_name=region or None)
    source = _credential_source(session)
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1, "mode": "standard"})
    client = session.client("s3", endpoint_url=endpoint or None, config=config)
    where = f"{what} s3://{bucket} at {client.meta.endpoint_url}"
    try:
        client.head_bucket(Bucket=bucket)
    except (NoCredentialsError, PartialCredentialsError):
        raise StorageError(f"{where}: incomplete AWS credentials: {_CREDENTIALS_HINT}") from None
    except SSLError:
        raise StorageError(
            f"{where}: TLS error (a self-signed certificate? set AWS_CA_BUNDLE to its CA file, or use http://)"
        ) from None
    except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError) as exc:
        reason = f"no answer within {timeout:g} s" if "Timeout" in type(exc).__name__ else "connection failed"
        raise StorageError(
            f"{where}: nothing answers at endpoint {client.meta.endpoint_url} ({reason}): check the endpoint "
            f"(`sanet remote setup --endpoint`, or MLFLOW_S3_ENDPOINT_URL for MLflow) and that the server runs"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or status)
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"):
            raise StorageError(
                f"{where}: access denied to the credentials from {source} (HTTP {status}): wrong "
                f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or a key without s3:ListBucket on this bucket"
            ) from None
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"{where}: the bucket does not exist: create it, or fix the URL") from None
        if code in ("301", "PermanentRedirect", "400", "AuthorizationHeaderMalformed"):
            raise StorageError(
                f"{where}: HTTP {status} ({code}): the bucket is probably in another region than "
                f"{client.meta.region_name!r}: set AWS_DEFAULT_REGION (or the remote's region, "
                f"`dvc remote modify --local NAME region REGION`)"
            ) from None
        raise StorageError(f"{where}: HTTP {status} ({code}): {error.get('Message') or 'no message'}") from None
    except BotoCoreError as exc:
        raise StorageError(f"{where}: {type(exc).__name__}: {exc}") from None
    return f"{where} answers (credentials from {source})"


def _dvc_config() -> Any:
    """DVC's config of the repository holding the working directory; StorageError outside a DVC repository."""
    from dvc.config import Config
    from dvc.config import ConfigError as DvcConfigError

    try:
        config = Config.from_cwd()
    except DvcConfigError as exc:
        raise StorageError(f"DVC's configuration cannot be read: {exc}") from None
    if config.dvc_dir is None:
        raise StorageError(
            f"{Path.cwd()} is not inside a DVC repository (no .dvc folder here or above): run from the "
            f"repository root, or `dvc init` first"
        )
    return config


def configure_remote(url: str, endpoint: str | None = None, name: str = "storage", check: bool = True) -> str:
    """Make `url` (s3://bucket[/prefix]) DVC's default remote `name`; return a summary line.

    The URL goes to `.dvc/config` (committed: every clone uses it), replacing a remote of the same name
    (`dvc remote add --default --force`). The endpoint of an S3-compatible store goes to `.dvc/config.local`
    (per machine, not committed) as the remote's `endpointurl`; without `endpoint`, a local `endpointurl` (or
    `url`) of that remote left by an earlier setup is removed, so that DVC talks to AWS. No credential is written.
    With `check`, the bucket is contacted first (see `check_bucket`) and nothing is written when that fails.

    Raises:
        StorageError: a bad URL, endpoint or name; outside a DVC repository; the bucket does not answer.
    """
    location = parse_s3_url(url)
    endpoint = parse_endpoint(endpoint) if endpoint else None
    if not _REMOTE_NAME.match(name):
        raise StorageError(f"remote name {name!r}: use letters, digits, '.', '_' or '-' (e.g. storage)")
    config = _dvc_config()
    reached = ""
    if check:
        reached = "; " + check_bucket(location.bucket, endpoint, what="remote")
    from dvc.config import ConfigError as DvcConfigError

    try:
        with config.edit("repo") as conf:
            conf["remote"][name] = {"url": location.url}
            conf["core"]["remote"] = name
        with config.edit("local") as conf:
            section = conf["remote"].get(name, {})
            for key in ("url", "endpointurl"):
                section.pop(key, None)
            if endpoint:
                section["endpointurl"] = endpoint
            if section:
                conf["remote"][name] = section
            else:
                conf["remote"].pop(name, None)
            if conf["core"].get("remote", name) != name:  # a local default would shadow the one just set
                del conf["core"]["remote"]
    except DvcConfigError as exc:
        raise StorageError(f"DVC refused the remote configuration in {config.dvc_dir}: {exc}") from None
    where = f" via {endpoint} (.dvc/config.local, this machine only)" if endpoint else ""
    return f"DVC remote '{name}' = {location.url} (default, .dvc/config){where}{reached}"


def check_remote(params: Params, name: str | None = None) -> str:
    """Contact DVC's remote (`name`, else the default one) and MLflow's S3 artifact store; return a summary.

    The DVC remote must be an S3 URL; its `endpointurl` and `region` come from DVC's merged configuration, its
    credentials from the environment only. When `params.tracking.artifact_location` starts with `s3://`, that
    bucket is contacted too, through `MLFLOW_S3_ENDPOINT_URL` when set (as MLflow does).

    Raises:
        StorageError: no such remote, not an S3 remote, credentials in DVC's config, or a bucket that does not
            answer (see `check_bucket`).
    """
    config = _dvc_config()
    merged = config.read()
    remotes = merged.get("remote", {})
    name = name or merged.get("core", {}).get("remote")
    if not name:
        raise StorageError(
            "DVC has no default remote: run `sanet remote setup --url s3://bucket/prefix [--endpoint URL]` "
            "or name one with --name"
        )
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise StorageError(f"DVC has no remote named {name!r} (configured: {known}): see `dvc remote list`")
    for level in ("repo", "local"):
        section = config.read(level).get("remote", {}).get(name, {})
        if leaked := [key for key in _SECRET_KEYS if key in section]:
            raise StorageError(
                f"DVC remote '{name}' holds credentials ({', '.join(leaked)}) in {config.files[level]}: remove "
                f"them (`dvc remote modify {'--local ' if level == 'local' else ''}{name} --unset KEY`) and "
                f"{_CREDENTIALS_HINT}"
            )
    remote = remotes[name]
    url = str(remote.get("url", ""))
    if not url.startswith("s3://"):
        raise StorageError(f"DVC remote '{name}' is {url!r}, not an S3 URL: `sanet remote check` checks S3 only")
    location = parse_s3_url(url)
    lines = [check_bucket(location.bucket, remote.get("endpointurl"), remote.get("region"), what=f"DVC remote {name}")]
    artifacts = params.tracking.artifact_location
    if artifacts.startswith("s3://"):
        store = parse_s3_url(artifacts)
        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL", "").strip() or None
        lines.append(check_bucket(store.bucket, endpoint, what="MLflow artifact store"))
    else:
        lines.append(f"MLflow artifact store: {artifacts or 'MLflow default'} (not S3: not checked)")
    return "\n".join(lines)
