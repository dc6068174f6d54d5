"""Where the repository is, for the few module-level uses (constants, `pytest.mark.parametrize` arguments, helpers
called outside a fixture); tests and fixtures take the `repo_root` and `params_file` fixtures of tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "params.yaml"
