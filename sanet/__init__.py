"""sanet-bench: SANet for partial person re-identification, and the pipeline that benchmarks it."""

import os

# The project's own entry points never phone home (no internet on build machines, and no surprise traffic on clusters).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

__version__ = "0.1.0"
