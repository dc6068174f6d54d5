"""A local S3 server for tests: moto's S3 on 127.0.0.1, in a thread, recording the headers of every request.

moto's server (the same WSGI app `python -m moto.server` runs) is served from a daemon thread of the test process
on a port the OS picks (no race for a "free" port). Every request's method, path and headers are recorded, so a
test can check what a client really sent over the wire (checksum headers, say), whether the client ran in this
process or in a subprocess (`dvc push`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

# Headers botocore >= 1.36 adds to uploads when it computes checksums by default (`when_supported`).
CHECKSUM_HEADER_PREFIXES = ("x-amz-checksum-", "x-amz-sdk-checksum-algorithm", "x-amz-trailer")


@dataclass(frozen=True)
class Recorded:
    """One request the server received: method, path (without the query) and headers with lower-case names."""

    method: str
    path: str
    headers: dict[str, str]

    def checksum_headers(self) -> dict[str, str]:
        """The checksum headers of this request (flexible checksums, trailers); empty when there are none."""
        return {k: v for k, v in self.headers.items() if k.startswith(CHECKSUM_HEADER_PREFIXES)}


@dataclass
class LocalS3:
    """moto's S3 server on 127.0.0.1; use as a context manager. `endpoint` is its URL once started."""

    requests: list[Recorded] = field(default_factory=list)
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalS3:
        """Start serving; returns self. Raises whatever moto or werkzeug raise when they cannot start."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: object, **kwargs: object) -> None:  # keep pytest's output readable
                pass

        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def recording(environ: dict[str, Any], start_response: Any) -> Any:
            headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
            for key in ("CONTENT_LENGTH", "CONTENT_TYPE", "CONTENT_ENCODING"):
                if key in environ:
                    headers[key.replace("_", "-").lower()] = str(environ[key])
            with lock:
                self.requests.append(Recorded(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers))
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", 0, recording, threaded=True, request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def uploads(self) -> list[Recorded]:
        """The PUT and POST requests received so far (object uploads, multipart parts, bucket creation)."""
        return [r for r in list(self.requests) if r.method in ("PUT", "POST")]

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
