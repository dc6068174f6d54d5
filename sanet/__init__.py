"""sanet-bench: SANet for partial person re-identification, and the pipeline that benchmarks it."""

import os

# The project's own entry points never phone home (no internet on build machines, and no surprise traffic on clusters).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# The stages print their own progress (bars, or one line per epoch under `--quiet`); MLflow's INFO lines (database
# set-up, signature inference) and its artifact-download bars would bury it in a `dvc repro` log. Export
# MLFLOW_LOGGING_LEVEL=INFO to see them again.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# botocore >= 1.36 adds CRC32 checksums to every upload and asks for checksums on every download; several
# S3-compatible stores (older MinIO, Ceph RGW, some vendors) reject or mangle them. Checksums only where an S3
# operation requires one, for MLflow's artifact uploads (boto3) and for the `dvc` commands this process starts
# (aiobotocore reads the same variables). A value the user exported wins. See sanet/infra/s3.py.
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")

__version__ = "0.1.0"
