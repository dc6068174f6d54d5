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
# botocore >= 1.36 checksums break some S3-compatible stores (older MinIO, Ceph RGW): send them only where required.
export AWS_REQUEST_CHECKSUM_CALCULATION ?= when_required
export AWS_RESPONSE_CHECKSUM_VALIDATION ?= when_required

UI_PORT ?= 5000
PLOTS_STAMP := tools/plots/node_modules/.installed
# Table 3 (variants) and Table 4 (AFE layers, cell kernel) settings; the baseline is the pipeline's own run.
ABLATIONS ?= model.variant=hpnet model.variant=global model.variant=fixed_fe \
	model.afe.layers=3 model.afe.layers=7 model.afe.kernel=1 model.afe.kernel=5
ABLATION_SET ?=
EXPS_FLAGS ?= -n 2

.PHONY: help install pifpaf plots-js test lint format demo repro hpo registry plots ui exps screenshots ablations remote image lock clean

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

test: install pifpaf plots-js  ## run the test suite
	$(BIN)/pytest

lint: install  ## ruff (lint and formatting), mypy (sanet/) and hadolint (the Dockerfile)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sanet
	$(BIN)/hadolint Dockerfile

format: install  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

plots-js: $(PLOTS_STAMP)  ## install the vega libraries that `make plots` inlines (npm, once)

$(PLOTS_STAMP): tools/plots/package.json tools/plots/package-lock.json
	npm ci --prefix tools/plots --no-audit --no-fund --loglevel=error
	@touch $@

demo: install  ## set up and run the whole pipeline on the synthetic benchmark (15 to 30 minutes on 2 cores, by processor)
	@start=$$SECONDS; \
	$(BIN)/sanet synth --out data --preview reports/synthetic_preview.png && \
	$(BIN)/sanet data stats --root data && \
	{ $(BIN)/dvc commit --quiet data.dvc || { echo "data/ differs from what data.dvc pins (see docs/benchmarks.md, Data under DVC)"; exit 1; }; } && \
	SANET_PIPELINE_RUN=$${SANET_PIPELINE_RUN:-demo-$$(date -u +%Y%m%d-%H%M%S)} $(BIN)/dvc repro && \
	$(BIN)/sanet masks --preview reports/masks_preview.png && \
	$(BIN)/dvc status && \
	echo && cat reports/benchmark.txt && echo && \
	echo "pipeline finished in $$((SECONDS - start)) s. Where to look next:" && \
	echo "  reports/benchmark.md       the paper-comparison report (Tables 1-4), figures in reports/figures/" && \
	echo "  reports/eval/<benchmark>/  metrics, CMC, ranked lists (ranked_list.png), AFE routing (routing.png)" && \
	echo "  reports/registry.json      the model version registered and the promotion gate's decision" && \
	echo "  reports/hpo/<space>.json   best settings of each Optuna study, with its history and importance plots" && \
	echo "  make registry              versions, aliases (candidate, champion) and metrics of the registered model" && \
	echo "  make ui                    MLflow: every stage's run, grouped by the pipeline_run tag" && \
	echo "  make plots                 DVC plots as a page that works offline (reports/plots/index.html)" && \
	echo "  make screenshots           the MLflow runs table and registry as PNGs (needs Chromium)" && \
	echo "  dvc metrics diff HEAD~1 / dvc plots diff HEAD~1 / make exps / make ablations (Tables 3 and 4)"

repro: install  ## `dvc repro` with one pipeline_run tag for all its MLflow runs
	SANET_PIPELINE_RUN=$${SANET_PIPELINE_RUN:-repro-$$(date -u +%Y%m%d-%H%M%S)} $(BIN)/dvc repro

hpo: install  ## (re)run the Optuna studies only (dvc repro of the hpo stages); SPACE=joint for one of them
	SANET_PIPELINE_RUN=$${SANET_PIPELINE_RUN:-hpo-$$(date -u +%Y%m%d-%H%M%S)} $(BIN)/dvc repro $(if $(SPACE),hpo@$(SPACE),hpo)

registry: install  ## print the registered model's versions, aliases, gate decisions and metrics
	$(BIN)/sanet registry show

plots: install plots-js  ## render DVC's plots to reports/plots/index.html, vega inlined (no internet needed)
	$(BIN)/sanet plots --out reports/plots

ui: install  ## start the MLflow UI on 127.0.0.1 (UI_PORT=5000) for the local runs (mlflow.db)
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)  (Ctrl-C stops it; runs of one pipeline share the pipeline_run tag)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns \
		--host 127.0.0.1 --port $(UI_PORT)

exps: install  ## DVC experiments and the last two commits as a terminal table: what differs, Rank-1 and mAP
	@# Plain `dvc exp show` lists every param, dependency and metric (hundreds of columns). This keeps the columns
	@# whose values differ between the rows shown, without dependency hashes, and of the metrics Rank-1 and mAP.
	$(BIN)/dvc exp show --only-changed --no-pager $(EXPS_FLAGS) --drop '(data|masks)$$|[^:]*/[^:]*$$|.*:(?!(rank1|mAP)$$)'

screenshots: install  ## PNGs of the MLflow UI (runs table, registry) in headless Chromium: reports/screenshots/
	$(BIN)/python tools/mlflow_screenshots.py --store sqlite:///$(CURDIR)/mlflow.db --artifacts $(CURDIR)/mlruns \
		--out reports/screenshots

ablations: install  ## Table 3 and 4: queue the ablation settings as DVC experiments, run them, refresh the report
	@test -f outputs/train/model.pt || { echo "run \`make demo\` (or \`make repro\`) first: ablations compare to its run"; exit 1; }
	@# Experiments run in temporary copies of the repository: the tracking store and artifacts are given absolute
	@# paths so that their MLflow runs land here, in the `sanet-ablations` experiment.
	@base=$$(git rev-parse --short HEAD); \
	for setting in $(ABLATIONS); do \
		$(BIN)/dvc exp run --queue report --name "abl-$$(echo $$setting | sed 's/^model\.//; s/[^a-z0-9]/-/g')" \
			-S $$setting -S tracking.experiment=sanet-ablations -S tracking.uri=sqlite:///$(CURDIR)/mlflow.db \
			-S tracking.artifact_location=$(CURDIR)/mlruns/ablations $(ABLATION_SET) || exit 1; \
	done; \
	$(BIN)/dvc exp run --run-all --jobs 1 && \
	$(BIN)/dvc exp show --rev $$base --md --drop '.*' --keep \
		'Experiment|model\.variant|model\.afe\.layers|model\.afe\.kernel|.*/(market1501|partial_ilids_p)/metrics\.json:(rank1|mAP)$$'
	$(BIN)/dvc repro --force --single-item report

remote: install  ## make an S3 bucket DVC's default remote: make remote URL=s3://bucket/prefix [ENDPOINT=http://host:9000]
	@test -n "$(URL)" || { echo "usage: make remote URL=s3://bucket/prefix [ENDPOINT=http://host:9000]"; exit 2; }
	$(BIN)/sanet remote setup --url $(URL) $(if $(ENDPOINT),--endpoint $(ENDPOINT))
	$(BIN)/sanet remote check

# $(error) is expanded before the recipe runs, so even `make -n image` stops on a missing REGISTRY or TAG.
image:  ## build and push both images: make image REGISTRY=registry.example.com/team TAG=0.1.0 (needs docker)
	$(if $(and $(REGISTRY),$(TAG)),,$(error make image needs REGISTRY and TAG: \
		make image REGISTRY=registry.example.com/team TAG=0.1.0))
	docker build --target sanet -t $(REGISTRY)/sanet-bench:$(TAG) .
	docker build --target masks -t $(REGISTRY)/sanet-bench:$(TAG)-masks .
	docker push $(REGISTRY)/sanet-bench:$(TAG)
	docker push $(REGISTRY)/sanet-bench:$(TAG)-masks

lock:  ## re-resolve requirements*.lock from requirements*.in (needs the package index)
	@test -x .lockenv/bin/uv || { $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install --quiet uv==$(UV_VERSION); }
	.lockenv/bin/uv pip compile requirements.in -o requirements.lock $(LOCK_FLAGS)
	.lockenv/bin/uv pip compile requirements-dev.in -o requirements-dev.lock $(LOCK_FLAGS)

LOCK_FLAGS = --python-version 3.11 --python-platform x86_64-manylinux_2_28 --index-strategy unsafe-best-match \
	--extra-index-url file:///opt/pypi-more/simple --find-links /opt/wheels --no-header --quiet

clean:  ## remove the environment and generated outputs (not data/)
	rm -rf $(VENV) .lockenv .pytest_cache .ruff_cache reports/synthetic_preview.png reports/masks_preview.png \
		tools/plots/node_modules reports/plots reports/screenshots
