# The sanet-bench image: what Kubeflow components and training pods run (CUDA build of torch from the lock).
# Build from the repository root: docker build -t REGISTRY/sanet-bench:TAG .
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1

WORKDIR /opt/sanet

# Dependencies first, from the same lock as `make install`, so code changes do not rebuild this layer.
COPY requirements.lock ./
RUN python -m pip install --no-cache-dir pip==25.3 \
    && python -m pip install --no-cache-dir --no-deps -r requirements.lock

COPY pyproject.toml README.md ./
COPY sanet ./sanet
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation . \
    && python -m pip check \
    && useradd --create-home --uid 1000 --user-group sanet

USER 1000:1000
WORKDIR /home/sanet
CMD ["sanet", "--help"]
