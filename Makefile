# sanet-bench: `make demo` and `make test` set everything up on a fresh machine (Linux x86_64, Python 3.11).
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP_VERSION := 25.3
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
PIFPAF_STAMP := $(VENV)/.pifpaf-installed
# pip's messages about the local wheel mirror's missing folders are noise; everything else is shown.
QUIET_MIRROR := { grep -v "is ignored: it is neither a file nor a directory" || true; }

# dvc.yaml's stages call `sanet`: recipes find it (and dvc) in the environment without activating it.
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: help install pifpaf test lint format demo lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the locked environment (a no-op when up to date)

$(STAMP): requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION) 2>&1 | $(QUIET_MIRROR)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-dev.lock 2>&1 | $(QUIET_MIRROR)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_MIRROR)
	$(BIN)/python -m pip check
	@touch $@

pifpaf: $(PIFPAF_STAMP)  ## build (once per machine, cached) and install OpenPifPaf for the mask stage

$(PIFPAF_STAMP): $(STAMP) tools/build_pifpaf.sh
	tools/build_pifpaf.sh $(BIN)/python
	@touch $@

test: install pifpaf  ## run the test suite
	$(BIN)/pytest

lint: install  ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install  ## generate the synthetic benchmark (as pinned by data.dvc) and print its statistics
	$(BIN)/sanet synth --out data --preview reports/synthetic_preview.png
	$(BIN)/sanet data stats --root data
	@# `dvc commit` without --force stores data/ in the DVC cache only if it is exactly what data.dvc pins.
	@$(BIN)/dvc commit --quiet data.dvc || { echo "data/ differs from what data.dvc pins (see README, Data)"; exit 1; }
	$(BIN)/dvc status data.dvc
	$(BIN)/dvc repro masks
	$(BIN)/sanet masks --preview reports/masks_preview.png
	$(BIN)/dvc status

lock:  ## re-resolve requirements*.lock from requirements*.in (needs the package index)
	@test -x .lockenv/bin/uv || { $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install --quiet uv==$(UV_VERSION); }
	.lockenv/bin/uv pip compile requirements.in -o requirements.lock $(LOCK_FLAGS)
	.lockenv/bin/uv pip compile requirements-dev.in -o requirements-dev.lock $(LOCK_FLAGS)

LOCK_FLAGS = --python-version 3.11 --python-platform x86_64-manylinux_2_28 --index-strategy unsafe-best-match \
	--extra-index-url file:///opt/pypi-more/simple --find-links /opt/wheels --no-header --quiet

clean:  ## remove the environment and generated outputs (not data/)
	rm -rf $(VENV) .lockenv .pytest_cache .ruff_cache reports/synthetic_preview.png reports/masks_preview.png
