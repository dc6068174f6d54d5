"""Screenshots of the MLflow UI as a new user sees it after `make demo`, rendered by headless Chromium.

`make screenshots` (or `python tools/mlflow_screenshots.py`) starts `mlflow ui` on the local store on a free port,
opens the pages a person checks first, and writes one PNG per page:

- `runs.png`: the runs table of the pipeline's experiment (`tracking.experiment`), one run per stage;
- `registry.png`: the registered model's versions table (`registry.model_name`): aliases and the handful of tags;
- `version.png`: the newest version's page (its tags, its source model);
- `model.png`: the logged model the newest version was registered from (its "Registered models" field).

It checks what it can read off the pictures (a PNG that is one flat colour means the page did not render) and exits
with status 1 when a page failed, naming it. It needs a Chromium (Debian's package `chromium`, or `--chromium PATH`);
nothing is downloaded. Rerun it after a pipeline run to see what the UI shows; it changes nothing in the store.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WINDOW = (1600, 1000)
RENDER_BUDGET_MS = 20_000  # virtual time Chromium gives the single-page app to fetch and draw its data


def find_chromium(explicit: str | None) -> str:
    """The Chromium executable: `--chromium`, `$CHROMIUM`, else the first of `CHROMIUM_NAMES` on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), *CHROMIUM_NAMES):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise SystemExit(
        "no Chromium found: install Debian's `chromium` package (apt-get install chromium), or pass --chromium PATH"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def mlflow_ui(store: str, artifacts: str, timeout: float = 90.0) -> Iterator[str]:
    """`mlflow ui` on 127.0.0.1 and a free port for the block; yields its base URL, then stops its process group."""
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "ui",
        "--backend-store-uri",
        store,
        "--default-artifact-root",
        artifacts,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_healthy(process, base, log, timeout)
            yield base
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


def _wait_healthy(process: subprocess.Popen[bytes], base: str, log: IO[bytes], timeout: float) -> None:
    """Return once GET /health answers 200; exit with the server's log when it dies, or after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"mlflow ui exited with status {process.returncode}:\n{log.read().decode()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
            if answer.status == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"mlflow ui did not answer {base}/health within {timeout:.0f} s")
        time.sleep(0.5)


def screenshot(chromium: str, url: str, path: Path) -> None:
    """Render `url` in headless Chromium at `WINDOW` and write the visible part to `path` (PNG)."""
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--virtual-time-budget={RENDER_BUDGET_MS}",
            f"--screenshot={path}",
            url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not path.is_file():
        raise SystemExit(f"Chromium could not render {url} (status {done.returncode}):\n{done.stderr[-2000:]}")


def looks_rendered(path: Path) -> bool:
    """False for a PNG of one flat colour (a blank page); True when the picture holds something drawn."""
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("L").getcolors(maxcolors=64)
    return colours is None or len(colours) > 8  # None: more than 64 grey levels, i.e. text and tables


def pages(store: str, experiment: str, model_name: str) -> dict[str, str]:
    """`{file stem: UI route}` of the pages to capture, found in the store (those whose objects exist)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    found: dict[str, str] = {}
    if (exp := client.get_experiment_by_name(experiment)) is not None:
        found["runs"] = f"#/experiments/{exp.experiment_id}/runs"
    versions = client.search_model_versions(f"name = '{model_name}'")
    if versions:
        newest = max(versions, key=lambda v: int(v.version))
        found["registry"] = f"#/models/{model_name}"
        found["version"] = f"#/models/{model_name}/versions/{newest.version}"
        # search results leave model_id out; the source of a version made from a logged model is models:/<id>
        model_id = newest.model_id or (newest.source or "").removeprefix("models:/")
        if model_id.startswith("m-"):
            logged = client.get_logged_model(model_id)
            found["model"] = f"#/experiments/{logged.experiment_id}/models/{logged.model_id}"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite:///mlflow.db", help="tracking and registry store (sqlite:///...)")
    parser.add_argument("--artifacts", default="mlruns", help="the store's artifact root")
    parser.add_argument("--experiment", default="sanet", help="experiment whose runs table is captured")
    parser.add_argument("--model", default="sanet", help="registered model whose pages are captured")
    parser.add_argument("--out", type=Path, default=Path("reports/screenshots"), help="folder for the PNGs")
    parser.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    args = parser.parse_args(argv)

    chromium = find_chromium(args.chromium)
    routes = pages(args.store, args.experiment, args.model)
    if not routes:
        raise SystemExit(
            f"{args.store} has no experiment {args.experiment!r} and no model {args.model!r}: run make demo"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    with mlflow_ui(args.store, args.artifacts) as base:
        for name, route in routes.items():
            path = args.out / f"{name}.png"
            screenshot(chromium, f"{base}/{route}", path)
            ok = looks_rendered(path)
            failed += [] if ok else [name]
            print(f"{path}  {path.stat().st_size / 1024:.0f} KiB  {'ok' if ok else 'BLANK'}  {base}/{route}")
    if failed:
        print(f"pages that did not render: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
