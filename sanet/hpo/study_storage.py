"""Where a study lives: the storage URL, its pre-flight check, and opening it safely from many processes at once.

Accepted storages (`hpo.storage`, overridden by the environment variable `SANET_HPO_STORAGE`):

- `sqlite:///PATH`: one machine (several processes wait for each other's locks);
- any other SQLAlchemy URL (`postgresql+psycopg://user:pass@host/db`, `mysql+pymysql://...`): workers on many
  machines, the cluster's choice;
- `journal:PATH`: Optuna's journal file, for workers on many machines sharing a file system without a database.

Workers that die mid-trial (a preempted pod) leave their trial RUNNING; with a database storage, Optuna's heartbeat
marks it FAIL after `GRACE_PERIOD` seconds without a heartbeat and queues it once more.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sanet.hpo.errors import HPOError
from sanet.infra.preflight import check_database_url, check_sqlite_url, check_writable_folder, redact, with_deadline

if TYPE_CHECKING:
    import optuna

    from sanet.config import Params

__all__ = ["GRACE_PERIOD", "HEARTBEAT_INTERVAL", "STORAGE_ENV", "check_storage", "open_storage", "storage_url"]

STORAGE_ENV = "SANET_HPO_STORAGE"
HEARTBEAT_INTERVAL = 60  # seconds between a running trial's heartbeats (database storages)
GRACE_PERIOD = 180  # seconds without a heartbeat after which a RUNNING trial is failed and retried once
JOURNAL_PREFIX = "journal:"
SQLITE_LOCK_TIMEOUT = 60  # seconds a sqlite connection waits for another process's lock
_WHAT = "Optuna storage"
_ACCEPTED = (
    "sqlite:///PATH, another SQLAlchemy database URL (postgresql+psycopg://user:password@host/db, "
    "mysql+pymysql://...) or journal:PATH (set hpo.storage or SANET_HPO_STORAGE)"
)
_SCHEMA_RETRIES = 5


def storage_url(params: Params) -> str:
    """The storage a study uses: `SANET_HPO_STORAGE` when set and non-empty, else `hpo.storage`."""
    return os.environ.get(STORAGE_ENV, "").strip() or params.hpo.storage


def _journal_path(url: str) -> Path:
    path = url[len(JOURNAL_PREFIX) :].strip()
    if path.startswith("//"):  # journal:///abs/path, by analogy with sqlite:///
        path = path[2:]
    if not path:
        raise HPOError(f"{_WHAT} {url!r}: journal: needs a file path, e.g. journal:optuna.log")
    return Path(path).expanduser()


def _kind(url: str) -> str:
    """`journal`, `sqlite` or `database`; HPOError for anything else."""
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    if "://" not in url:
        raise HPOError(f"{_WHAT} {redact(url)!r} is not a storage URL; accepted: {_ACCEPTED}")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HPOError(f"{_WHAT} {redact(url)!r} is not a valid URL; accepted: {_ACCEPTED}") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        raise HPOError(f"{_WHAT} {redact(url)}: write postgresql:// (SQLAlchemy does not know postgres://)")
    if backend == "sqlite":
        return "sqlite"
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        shown = f"{_WHAT} {redact(url)}: {parsed.drivername}://"
        raise HPOError(f"{shown} is not a storage; accepted: {_ACCEPTED}") from None
    except ImportError:  # the dialect exists, its driver is missing: check_database_url names the package
        pass
    return "database"


def _check_journal(url: str) -> None:
    path = _journal_path(url)
    where = f"{_WHAT} {url}"
    check_writable_folder(path.parent, where, HPOError)
    if path.exists():
        if not path.is_file():
            raise HPOError(f"{where}: {path} exists and is not a file")
        try:
            with path.open("rb+"):
                pass
        except OSError as exc:
            raise HPOError(f"{where}: cannot open {path} for reading and writing ({exc.strerror})") from None


def check_storage(url: str, timeout: float = 5.0) -> None:
    """Pre-flight: make sure the storage can be used, within about `timeout` seconds, before any training.

    sqlite: the folder exists or is created and is writable, an existing file is a SQLite database. Other
    SQLAlchemy URLs: a connection and `SELECT 1` within the deadline (a missing driver is named). `journal:PATH`:
    the folder exists or is created and is writable, an existing file can be opened. Anything else is refused.

    Raises:
        HPOError: the message names the storage (password hidden) and the reason.
    """
    url = url.strip()
    kind = _kind(url)
    if kind == "journal":
        _check_journal(url)
    elif kind == "sqlite":
        from sqlalchemy.engine import make_url

        if make_url(url).database in (None, "", ":memory:"):
            raise HPOError(
                f"{_WHAT} {url}: an in-memory database dies with its process, and a study outlives it (workers, "
                "summaries): use a file, e.g. sqlite:///optuna.db"
            )
        check_sqlite_url(url, _WHAT, HPOError)
    else:
        with_deadline(lambda: check_database_url(url, timeout, _WHAT, HPOError), timeout, url, _WHAT, HPOError)


@contextlib.contextmanager
def _file_lock(path: Path, suffix: str = ".lock") -> Iterator[None]:
    """An exclusive `flock` on `<path><suffix>` for the block: one process at a time creates a fresh store."""
    lock = path.with_name(path.name + suffix)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _rdb(url: str, engine_kwargs: dict) -> optuna.storages.RDBStorage:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna; the project relies on it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open (creating its schema when fresh) the storage `url` names, safely from many processes at once.

    SQLAlchemy URLs give an `RDBStorage` with a heartbeat (`HEARTBEAT_INTERVAL`, `GRACE_PERIOD`; a stale trial is
    failed and retried once), sqlite connections that wait for locks and pre-pinged server connections; `journal:PATH`
    gives a `JournalStorage` on that file. Two processes opening a fresh store at once must not both create its
    schema: for files an exclusive lock on `<file>.lock` serialises them; for servers the loser retries.

    Raises:
        HPOError: an unaccepted URL, or a server that keeps refusing (the message names it, password hidden).
    """
    url = url.strip()
    kind = _kind(url)
    if kind == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = _journal_path(url)
        with _file_lock(path, ".init.lock"):  # not <path>.lock: Optuna's journal lock is a symlink by that name
            return JournalStorage(JournalFileBackend(str(path)))
    if kind == "sqlite":
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}}
        if not database or database == ":memory:":
            return _rdb(url, kwargs)
        with _file_lock(Path(database).expanduser()):
            return _rdb(url, kwargs)
    return _open_server(url)


def _open_server(url: str) -> optuna.storages.RDBStorage:
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    attempt = 0
    while True:
        try:
            return _rdb(url, {"pool_pre_ping": True})
        except (OperationalError, IntegrityError, ProgrammingError) as exc:
            # Two processes creating a fresh schema at once: the loser sees a duplicate table or type; retry.
            attempt += 1
            if attempt >= _SCHEMA_RETRIES:
                reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                raise HPOError(f"{_WHAT} {redact(url)} cannot be opened: {reason}") from None
            time.sleep(0.5 * attempt)
