"""Pre-flight checks of the databases the project writes to: MLflow's tracking store and Optuna's storage.

MLflow and Optuna retry for minutes before they give up on an unreachable database, long after the data was read
and the model built; these checks fail in seconds instead, with a message that names the store (password hidden)
and the reason. Each takes `what` (how the message names the store) and `error` (the exception class to raise).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["check_database_url", "check_sqlite_url", "check_writable_folder", "redact", "with_deadline"]

# DB-API driver module -> the pip package that provides it (what to install when it is missing).
_DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}


def redact(uri: str) -> str:
    """`uri` with any password replaced by `***`, so that messages and logs never print a credential."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:  # not parseable as a URL (an odd port, say): show nothing that could be secret
        return uri.split("@")[-1]


def with_deadline(check: Callable[[], None], timeout: float, uri: str, what: str, error: type[Exception]) -> None:
    """Run `check` in a daemon thread; raise `error` when it has not finished after `timeout` (+1) seconds.

    Drivers and HTTP clients apply their timeouts per socket operation, so a slow server could stall a check for a
    multiple of `timeout`; the thread bounds the whole check. A check still running is abandoned (daemon thread).
    """
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            check()
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, name="sanet-tracking-check", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        raise error(f"{what} {redact(uri)} did not answer within {timeout:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def check_writable_folder(folder: Path, where: str, error: type[Exception]) -> None:
    """`folder` exists (it is created) and a file can be written in it; `where` starts the error message."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise error(f"{where}: cannot create the folder {folder}: {reason}") from None
    if not folder.is_dir():
        raise error(f"{where}: {folder} is not a folder")
    try:  # a real write, not os.access: the latter says yes to root on read-only mounts
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".sanet-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{where}: the folder {folder} is not writable ({exc.strerror})") from None


def check_sqlite_url(uri: str, what: str, error: type[Exception]) -> None:
    """The database file of a sqlite URL can be created or opened for writing (its folder is created)."""
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        return
    path = Path(database).expanduser()
    where = f"{what} {uri}"
    check_writable_folder(path.parent, where, error)
    if path.exists():
        if not path.is_file():
            raise error(f"{where}: {path} exists and is not a file")
        try:
            with path.open("rb+") as handle:
                header = handle.read(16)
        except OSError as exc:
            raise error(f"{where}: cannot open {path} for writing ({exc.strerror})") from None
        if header and header != b"SQLite format 3\x00":
            raise error(f"{where}: {path} exists and is not a SQLite database")


def check_database_url(uri: str, timeout: float, what: str, error: type[Exception]) -> None:
    """A SQLAlchemy database URL connects within `timeout` and answers `SELECT 1`; a missing driver is named."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    try:
        url = make_url(uri)
    except ArgumentError:
        raise error(f"{what} {redact(uri)}: not a valid database URL") from None
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    seconds = max(1, round(timeout))
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args = {"connect_timeout": max(2, seconds)}  # libpq's minimum is 2 s
    elif backend == "mysql":
        connect_args = {"connect_timeout": seconds}
    elif backend == "mssql":
        connect_args = {"timeout": seconds}
    try:
        engine = create_engine(url, connect_args=connect_args, poolclass=NullPool)
    except NoSuchModuleError:
        raise error(f"{what} {shown}: SQLAlchemy has no dialect for {url.drivername!r}") from None
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "the database driver")
        raise error(
            f"{what} {shown}: the database driver {module or url.drivername!r} is not installed (pip install {package})"
        ) from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        original = getattr(exc, "orig", None) or exc
        reason = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
        raise error(f"{what} {shown} is unreachable: {reason}") from None
    finally:
        engine.dispose()
