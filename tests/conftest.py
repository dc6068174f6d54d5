"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from postgres import schema_url


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, made once per session; tests copy it (MLflow's schema migrations take seconds)."""
    path = tmp_path_factory.getbasetemp() / f"mlflow-{mlflow.__version__}-empty.db"
    partial = path.with_suffix(".partial")
    mlflow.MlflowClient(f"sqlite:///{partial}").search_experiments()
    partial.rename(path)
    return path


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a fresh schema in the local PostgreSQL `test` database (skips when no server answers)."""
    with schema_url() as url:
        yield url
