"""A real `mlflow server` for tests: PostgreSQL as its backend store, a temporary folder as its artifact store.

It is the setup of a cluster (a tracking server in front of a database, artifacts proxied by the server), so the
registry is tested through MLflow's REST API, not only through a local sqlite store. The server runs as a child
process in a session of its own on 127.0.0.1 and a free port; on exit its whole process group is terminated (killed
after a grace period), so no worker outlives the tests. A server that does not answer GET /health within the
timeout fails the test with the server's log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

__all__ = ["running_mlflow_server"]

_START_TRIES = 3  # a port found free can be taken by another process before the server binds it


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminate the server's process group (uvicorn and its workers), then kill what is left after `grace` s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):  # workers the main process left behind
        os.killpg(process.pid, signal.SIGKILL)


def _wait_healthy(process: subprocess.Popen[bytes], uri: str, timeout: float) -> bool:
    """True once GET /health answers 200; False when the process exited first. Raises TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError


@contextlib.contextmanager
def running_mlflow_server(backend_store_uri: str, workdir: Path, timeout: float = 90.0) -> Iterator[str]:
    """Start `mlflow server` on `backend_store_uri`, with artifacts under `workdir/artifacts`; yield its http URI.

    The server's output goes to `workdir/server.log`, shown in the failure message when it does not come up. The
    server gets MLFLOW_DISABLE_TELEMETRY=true and no MLFLOW_TRACKING_URI (it must not log to another store).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = workdir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log_path = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    for _ in range(_START_TRIES):
        port = _free_port()
        uri = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend_store_uri,
            "--artifacts-destination",
            str(artifacts),
            "--workers",
            "1",
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
            )
        try:
            try:
                healthy = _wait_healthy(process, uri, timeout)
            except TimeoutError:
                log_text = log_path.read_text(errors="replace")[-5000:]
                raise RuntimeError(
                    f"mlflow server did not answer {uri}/health within {timeout:g} s:\n{log_text}"
                ) from None
            if healthy:
                yield uri
                return
        finally:
            _stop(process)
    log_text = log_path.read_text(errors="replace")[-5000:]
    raise RuntimeError(f"mlflow server exited before answering /health ({_START_TRIES} tries):\n{log_text}")
