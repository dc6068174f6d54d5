"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, made once per session; tests copy it (MLflow's schema migrations take seconds)."""
    path = tmp_path_factory.getbasetemp() / f"mlflow-{mlflow.__version__}-empty.db"
    partial = path.with_suffix(".partial")
    mlflow.MlflowClient(f"sqlite:///{partial}").search_experiments()
    partial.rename(path)
    return path
