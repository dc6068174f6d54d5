"""The PostgreSQL server every machine of this project runs (127.0.0.1:5432, database `test`, trust auth).

It is the store a cluster uses for MLflow and Optuna, so the registry and the shared Optuna studies are tested
against it. Each test gets a schema of its own in that database (a search_path in the URL), dropped afterwards, so
tests neither see each other's tables nor leave any behind. `SANET_TEST_POSTGRES_URL` points the tests at another
server. Tests that need it skip, saying why, only where no server answers.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def base_url() -> str:
    """The server's URL: `SANET_TEST_POSTGRES_URL`, else the project's standard one."""
    return os.environ.get("SANET_TEST_POSTGRES_URL", "").strip() or DEFAULT_URL


def unavailable_reason() -> str | None:
    """Why the server cannot be used (shown as the skip reason), or None when it answers."""
    url = base_url()
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        shown = make_url(url).render_as_string(hide_password=True)
        return f"no PostgreSQL server answers at {shown} ({reason}); set SANET_TEST_POSTGRES_URL to use another"
    return None


@contextmanager
def schema_url() -> Iterator[str]:
    """A fresh schema in the test database, as a URL whose search_path points at it; dropped on exit."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    schema = f"sanet_{secrets.token_hex(4)}"
    admin = create_engine(base_url(), poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
