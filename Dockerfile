# syntax=docker/dockerfile:1
# The sanet-bench images that Kubeflow components and training pods run (docs/docker.md). Two targets:
#   sanet (the default, last stage)  the locked environment and the `sanet` package
#   masks                            the same plus OpenPifPaf, for the mask-generation component
# `make image REGISTRY=... TAG=...` builds and pushes both (needs BuildKit, the default since Docker 23).
#
# Base: PyTorch's official image for the lock's torch (2.14.1, a CUDA 13.0 build, with CUDA 13 nvidia wheels) and
# CPython 3.11, which the lock is resolved for. The tags follow PyTorch's naming scheme
# (<torch>-cuda<major.minor>-cudnn<major>-runtime|devel); they could not be pulled where this file was written
# (no registry access), so the first build checks the Python version and fails early on a mismatch.
# The runtime and devel tags must stay identical apart from that suffix: the OpenPifPaf wheel built in the devel
# stage is loaded by the runtime stage's torch (tests/test_dockerfile.py checks both against requirements.lock).

# ---- base: the runtime image with requirements.lock and the sanet package, as `make install` does it ----
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    AWS_REQUEST_CHECKSUM_CALCULATION=when_required \
    AWS_RESPONSE_CHECKSUM_VALIDATION=when_required

WORKDIR /opt/sanet

# Dependencies first, from the same lock, pip and --no-deps as `make install`, so code changes do not rebuild this
# layer. The base's torch (2.14.1+cu130) already satisfies the lock's torch==2.14.1; pip keeps it.
COPY requirements.lock ./
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), f"the lock is for CPython 3.11: {sys.version}"' \
    && python3 -m pip install --no-cache-dir pip==25.3 \
    && python3 -m pip install --no-cache-dir --no-deps -r requirements.lock

# The package, then a uid-1000 user with a home directory (Ubuntu 24.04 bases already have one, `ubuntu`: replaced).
COPY pyproject.toml README.md ./
COPY sanet ./sanet
RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build sanet.egg-info \
    && python3 -m pip check \
    && if id -u 1000 >/dev/null 2>&1; then userdel --remove "$(id -nu 1000)"; fi \
    && useradd --create-home --uid 1000 --user-group sanet

# ---- pifpaf-build: the OpenPifPaf wheel, built by tools/build_pifpaf.sh against the same torch (needs g++) ----
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-devel AS pifpaf-build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/sanet

# The script ends with `pip check` and an import through sanet.masks.pifpaf: it needs the whole locked environment.
# ninja (pinned as in requirements-dev.lock) compiles the extension's files in parallel.
COPY requirements.lock ./
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), f"the lock is for CPython 3.11: {sys.version}"' \
    && g++ --version \
    && python3 -m pip install --no-cache-dir pip==25.3 \
    && python3 -m pip install --no-cache-dir --no-deps -r requirements.lock \
    && python3 -m pip install --no-cache-dir --no-deps ninja==1.13.2

COPY pyproject.toml README.md ./
COPY sanet ./sanet
COPY tools/build_pifpaf.sh ./tools/

# A fresh cache folder, so it holds exactly one wheel: the one built here, which the masks stage installs.
ENV SANET_CACHE_DIR=/opt/pifpaf-cache
RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation . \
    && tools/build_pifpaf.sh "$(command -v python3)" \
    && mkdir -p /opt/pifpaf-wheel \
    && cp "$SANET_CACHE_DIR"/pifpaf/*/openpifpaf_vita-*.whl /opt/pifpaf-wheel/

# ---- masks: the runtime image plus OpenPifPaf (the mask-generation component's image) ----
FROM base AS masks

RUN --mount=type=bind,from=pifpaf-build,source=/opt/pifpaf-wheel,target=/tmp/pifpaf-wheel \
    python3 -m pip install --no-cache-dir --no-deps /tmp/pifpaf-wheel/openpifpaf_vita-*.whl \
    && python3 -m pip check \
    && python3 -c 'import sanet.masks.pifpaf as p; print("openpifpaf", p.import_openpifpaf().__version__)'

# Kubeflow components read their parameters from /opt/sanet/params.yaml (sanet/cluster/steps.py): keep the path.
COPY params.yaml /opt/sanet/params.yaml
USER 1000:1000
WORKDIR /home/sanet
ENTRYPOINT ["sanet"]
CMD ["--help"]

# ---- sanet (default target, keep it last): the runtime image without OpenPifPaf ----
FROM base AS sanet

COPY params.yaml /opt/sanet/params.yaml
USER 1000:1000
WORKDIR /home/sanet
ENTRYPOINT ["sanet"]
CMD ["--help"]
