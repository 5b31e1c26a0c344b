# Makefile: the one place every workflow starts (README, CI jobs, tests). `make help` lists the targets.
# VENV may point at a shared virtualenv (CI jobs and whole-pipeline tests reuse one environment).

VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
PHONY_INTERNAL := pipeline-ci release-ci promote-ci
.PHONY: $(PHONY_INTERNAL) ci-promote ci-variables docs help install install-dev system-packages run test lint ci-verify ci-test-e2e ci-test-docker ci-image ci-image-tag ci-image-pin ci-image-publish registry-login ci-train ci-retrain ci-report ci-release fingerprint ingest validate featurize train evaluate gate register report drift bench-pipeline bench-ci serve docker-build bench-serving clean chart-check monitoring-check docker-build-fetch docker-build-monitor docker-build-pipeline oip-clients rehearse training-job-stage kfp-pipeline airflow-dag

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_ -]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

# Install stamps are keyed by the content of pyproject.toml, so a copy of the repository (a CI job
# workspace, a gitlab-ci-local job) reuses a shared VENV instead of reinstalling.
DEPS_HASH := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha1(open('pyproject.toml','rb').read()).hexdigest()[:12])")
STAMP := $(VENV)/.installed-$(DEPS_HASH)
STAMP_DEV := $(VENV)/.installed-dev-$(DEPS_HASH)
# Node tools (gitlab-ci-local, npm-groovy-lint): tools/node_modules, or NODE_MODULES where an image
# already holds them (the CI image sets NODE_MODULES=/opt/node-tools/node_modules).
NODE_MODULES ?= tools/node_modules
NODE_HASH := $(shell sha1sum tools/package-lock.json | cut -c1-12)
NODE_TOOLS := $(NODE_MODULES)/.installed-$(NODE_HASH)
export PATH := $(abspath $(NODE_MODULES))/.bin:$(PATH)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_DEV): | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

$(NODE_TOOLS):
	@if [ "$(NODE_MODULES)" != "tools/node_modules" ]; then \
		echo "install-dev: $(NODE_MODULES) does not hold tools/package-lock.json's versions (no $@): rebuild the CI image (make ci-image)" >&2; exit 2; fi
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(STAMP) ## create the virtualenv (.venv, or the VENV variable) and install the package

install-dev: $(STAMP_DEV) $(NODE_TOOLS) ## install the package with the test and lint tools

run: install ## run the whole pipeline on the embedded defaults (check every params section, then dvc repro)
	mlops check-params
	dvc repro
	@echo "metrics: reports/metrics.json   model: models/   MLflow store: mlflow.db"

fingerprint ingest validate featurize train evaluate gate: install ## run one stage and its upstream stages (dvc repro <stage>)
	dvc repro $@

register: install ## register models/ in the MLflow registry, alias candidate (refuses a failed gate: exit 6)
	mlops register

report: install ## write the review report to reports/review/ (POST=1: also comment on the merge request)
	mlops report $(if $(POST),--post)

drift: install ## drift of logs/predictions vs the training split -> reports/drift/ (exit 7 on drift)
	mlops drift

system-packages: ## install the Debian packages the tests need (root), or print the command and stop (exit 3)
	@tools/system-packages.sh

test: system-packages install-dev ## run the whole test suite (unit, data, model, e2e)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-dev ## every pre-commit hook on every file (ruff, YAML, CI schemas, actionlint, hadolint, secrets)
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

bench-pipeline: install-dev ## benchmark: cold/no-op dvc repro, per-stage wall and import time, mlops --help, vs the last commit
	$(BIN)/python benchmarks/pipeline/bench.py --out benchmarks/pipeline/results.json

bench-ci: install-dev ## benchmark: the merge-request pipeline (gitlab-ci-local) cold and warm, vs the last commit
	$(BIN)/python benchmarks/ci/mr_pipeline.py --out benchmarks/ci/results.json

serve: install ## serve models/ over the Open Inference Protocol on 127.0.0.1:8080 (params.yaml `serve`)
	$(BIN)/mlops serve --model-dir models --port $(or $(PORT),8080)

# (recipes below call these directly, not through $(MAKE), so `make -n` never runs docker)
SERVE_BUILD = docker build --network host --build-arg BASE_IMAGE=$(or $(BASE_IMAGE),python:3.11-slim-bookworm) \
	--build-arg WHEELS=$(or $(WHEELS),index)
CI_IMAGE_BUILD = docker build --network host -f Dockerfile.ci --build-arg BASE_IMAGE=$(or $(BASE_IMAGE),python:3.11-slim-bookworm) \
	--build-arg WHEELS=$(or $(WHEELS),index)

docker-build: ## build the serving image (IMAGE, BASE_IMAGE and WHEELS=index|wheelhouse may be overridden)
	$(SERVE_BUILD) -t $(or $(IMAGE),mlops-serve:dev) .

docker-build-fetch: ## build the fetch-model init container image (Dockerfile.fetch; FETCH_IMAGE, BASE_IMAGE, WHEELS)
	docker build --network host -f Dockerfile.fetch --build-arg BASE_IMAGE=$(or $(BASE_IMAGE),python:3.11-slim-bookworm) \
		--build-arg WHEELS=$(or $(WHEELS),index) -t $(or $(FETCH_IMAGE),mlops-fetch:dev) .

docker-build-monitor: ## build the drift job / retrain webhook image (Dockerfile.monitor; MONITOR_IMAGE, BASE_IMAGE, WHEELS)
	docker build --network host -f Dockerfile.monitor --build-arg BASE_IMAGE=$(or $(BASE_IMAGE),python:3.11-slim-bookworm) \
		--build-arg WHEELS=$(or $(WHEELS),index) -t $(or $(MONITOR_IMAGE),mlops-monitor:dev) .

docker-build-pipeline: ## build the project image the TrainJob and the Kubeflow pipeline run (Dockerfile.pipeline; PIPELINE_IMAGE, BASE_IMAGE, WHEELS)
	$(SERVE_BUILD) -f Dockerfile.pipeline -t $(or $(PIPELINE_IMAGE),mlops-pipeline:dev) .

oip-clients: install-dev ## build the KServe SDK's OIP client virtualenv the serving tests use (cached; ~3 min once)
	$(BIN)/python tests/serve/oip_clients/toolenv.py

chart-check: install-dev ## render the charts for every env, ci/ scenario and Argo CD Application; validate strictly
	$(BIN)/pytest tests/deploy/test_chart.py tests/deploy/test_argocd.py tests/deploy/test_training_chart.py $(PYTEST_ARGS)

monitoring-check: install-dev ## Prometheus rules (promtool check + unit tests), dashboard PromQL, chart objects, Alertmanager (amtool, live routing)
	promtool check config monitoring/prometheus/prometheus.yml
	promtool test rules monitoring/tests/*.test.yaml
	amtool check-config monitoring/alertmanager/alertmanager.yml
	$(BIN)/pytest tests/monitoring $(PYTEST_ARGS)

training-job-stage: install ## regenerate charts/training-job/files/train-stage.json from dvc.yaml (train's cmd, data deps)
	$(BIN)/mlops dvc-stage train --out charts/training-job/files/train-stage.json

KFP_PIPELINE ?= build/pipeline.yaml
kfp-pipeline: install ## compile dvc.yaml to a Kubeflow Pipelines definition (KFP_PIPELINE, PIPELINE_IMAGE; kfp in its own cached venv)
	$(BIN)/mlops kfp-compile --out $(KFP_PIPELINE) $(if $(PIPELINE_IMAGE),--image $(PIPELINE_IMAGE)) \
		--kfp-python "$$($(BIN)/python tests/serve/oip_clients/toolenv.py tests/orchestrate/kfp-requirements.txt kfp-compiler)"

# Airflow itself is not needed to generate the DAG; to run it, Airflow 3 lives in its own cached venv:
# `$(BIN)/python tests/serve/oip_clients/toolenv.py tests/orchestrate/airflow-requirements.txt airflow`
AIRFLOW_DAG ?= build/airflow/mlops_dvc_pipeline.py
AIRFLOW_MODE ?= local
airflow-dag: install ## generate the Airflow DAG file from dvc.yaml (AIRFLOW_DAG, AIRFLOW_MODE=local|kubernetes, AIRFLOW_SCHEDULE=<cron>, PIPELINE_IMAGE)
	$(BIN)/mlops airflow-dag --out $(AIRFLOW_DAG) --mode $(AIRFLOW_MODE) $(if $(AIRFLOW_SCHEDULE),--schedule "$(AIRFLOW_SCHEDULE)") \
		$(if $(PIPELINE_IMAGE),--image $(PIPELINE_IMAGE))

rehearse: install-dev ## deploy rehearsal of ENV (default staging): register, promote, run the rendered pod under Docker, rollback, again
	MLOPS_REHEARSE_ENV=$(or $(ENV),staging) $(BIN)/pytest tests/e2e/test_rehearse.py -p no:cacheprovider $(PYTEST_ARGS)

bench-serving: install-dev ## benchmark: mlops serve vs mlflow models serve (needs wrk), same model and machine
	$(BIN)/python benchmarks/serving/bench.py --model-dir models --out benchmarks/serving/results.json

docs: install-dev ## regenerate the reference pages from the code and build the docs site strictly (build/site)
	$(BIN)/mlops reference --out-dir docs/reference
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean: ## remove pipeline outputs and the local MLflow store (not the DVC cache or remote)
	rm -rf data/raw data/processed models reports mlflow.db mlartifacts logs

# ---------------------------------------------------------------------------------------------------
# CI jobs: every job in .github/workflows/, .gitlab-ci.yml and Jenkinsfile is exactly one of these.
# The environment they read is one contract, src/mlops/ci_variables/ (the table:
# docs/reference/ci-variables.md, `make ci-variables`). Each job's first prerequisite, <job>-vars, checks
# it under CI=true: exit 2 naming each missing variable, before anything is installed or run; outside CI
# it does nothing and the jobs run on the embedded defaults (local MLflow store, local DVC remote).
# Standard library only: ci-image-publish runs it with the runner's python3, the others in the CI image.
CI_JOBS := ci-image-publish ci-verify ci-test-e2e ci-test-docker ci-train ci-retrain ci-report ci-release ci-promote
.PHONY: $(CI_JOBS:%=%-vars)
$(CI_JOBS:%=%-vars): %-vars:
	@PYTHONPATH=$(CURDIR)/src $(firstword $(wildcard $(BIN)/python) $(PYTHON)) -B -m mlops.ci_variables check $*

ci-variables: ## write docs/reference/ci-variables.md from the CI variables contract (src/mlops/ci_variables/)
	@PYTHONPATH=$(CURDIR)/src $(firstword $(wildcard $(BIN)/python) $(PYTHON)) -m mlops.ci_variables markdown \
		--out docs/reference/ci-variables.md

define use_ci_remote
	@if [ -n "$$DVC_REMOTE_URL" ]; then dvc remote add --local --force --default ci "$$DVC_REMOTE_URL"; fi
endef

# docker login to the registry of IMAGE_REGISTRY with the CI system's own credentials (when given; the
# contract refuses one without the other). Without them the runner's own login (a credential helper) is used.
define registry_login
	@if [ -n "$$REGISTRY_USER" ] && [ -n "$$REGISTRY_PASSWORD" ]; then \
		printf '%s' "$$REGISTRY_PASSWORD" | docker login --username "$$REGISTRY_USER" --password-stdin "$${IMAGE_REGISTRY%%/*}"; \
	else echo "ci: REGISTRY_USER/REGISTRY_PASSWORD not set: using the runner's existing docker login"; fi
endef

# DVC_REMOTE_URL is optional only for ci-train (a fork's merge request gets no secrets: nothing to push
# to); ci-retrain requires it (the contract), so its outputs always reach the remote.
define push_if_remote
	@if [ -n "$$DVC_REMOTE_URL" ]; then dvc push --run-cache; \
	else echo "ci: DVC_REMOTE_URL is not set (a fork's merge request gets no secrets): outputs not pushed"; fi
endef

# The test suite split across CI jobs (together: all of `make test`; a test checks the split):
#   ci-verify      lint + fast tests, over every CPU       (the CI image; pytest-xdist -n auto: one worker
#                  per CPU, PYTEST_XDIST_AUTO_NUM_WORKERS overrides; each worker builds its own session
#                  fixtures in its own temp dir. The CI image sets PYTHONDONTWRITEBYTECODE=1; the tests
#                  may write bytecode, so the workers reuse the modules pytest has already compiled and
#                  assertion-rewritten (~350, plugins included) instead of each redoing them)
#   ci-test-e2e    slow and end-to-end tests, no Docker    (the CI image)
#   ci-test-docker tests that start their own dockerd      (the CI image on a privileged runner)
# A merge request's verify lints the files it changes (MLOPS_DIFF_BASE: its base commit; main's pipeline
# linted the rest); every file when it touches the hooks or their pins, or where no base is known (main,
# a schedule, Jenkins). Whole-repository hooks such as groovy-lint (a JVM start) then run only when due.
LINT_ALL_WHEN := ^(\.pre-commit-config\.yaml|pyproject\.toml|tools/package(-lock)?\.json|\.secrets\.baseline)$$
define lint_scope
if [ -n "$$MLOPS_DIFF_BASE" ] && git cat-file -e "$$MLOPS_DIFF_BASE^{commit}" 2>/dev/null \
	&& ! git diff --name-only "$$MLOPS_DIFF_BASE" HEAD | grep -qE '$(LINT_ALL_WHEN)'; then \
	echo "--from-ref $$MLOPS_DIFF_BASE --to-ref HEAD"; else echo "--all-files"; fi
endef

ci-verify: ci-verify-vars install-dev ## CI job verify: lint (a merge request: the files it changes) and the fast tests
	$(BIN)/pre-commit run $$($(lint_scope)) --show-diff-on-failure
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -m "not e2e and not slow and not docker" -n auto $(PYTEST_ARGS)

ci-test-e2e: ci-test-e2e-vars install-dev ## CI job test-e2e: the slow and end-to-end tests (real servers, pipelines, gitlab-ci-local)
	$(BIN)/pytest -m "(e2e or slow) and not docker" $(PYTEST_ARGS)

ci-test-docker: ci-test-docker-vars install-dev ## CI job test-docker: image build/run and deploy rehearsal (starts dockerd: root, privileged)
	$(BIN)/pytest -m docker $(PYTEST_ARGS)

# The CI image (Dockerfile.ci), tagged by the hash of what it is built from.
CI_IMAGE_HASH := $(shell cat Dockerfile.ci pyproject.toml tools/package.json tools/package-lock.json tools/system-packages.sh \
	tests/serve/oip_clients/kserve-requirements.txt tests/serve/oip_clients/toolenv.py tests/orchestrate/kfp-requirements.txt \
	2>/dev/null | sha1sum | cut -c1-12)
CI_IMAGE ?= mlops-ci:$(CI_IMAGE_HASH)

ci-image: ## build the CI image (CI_IMAGE=mlops-ci:<hash of its inputs>; skipped when it exists)
	@if docker image inspect $(CI_IMAGE) >/dev/null 2>&1; then echo "ci-image: $(CI_IMAGE) exists"; \
	else $(CI_IMAGE_BUILD) -t $(CI_IMAGE) . ; fi

ci-image-tag: ## print the CI image tag (mlops-ci:<hash>)
	@echo $(CI_IMAGE)

ci-image-pin: ## write the CI image tag into the three CI files (after a dependency change)
	sed -i -E 's|mlops-ci:[0-9a-f]{12}|$(CI_IMAGE)|g' .gitlab-ci.yml .github/workflows/*.yml Jenkinsfile

registry-login: ## docker login to IMAGE_REGISTRY's host with REGISTRY_USER/REGISTRY_PASSWORD (when set)
	$(registry_login)

ci-image-publish: ci-image-publish-vars ## CI job ci-image: build and push the CI image unless IMAGE_REGISTRY already has its tag
	@if [ -z "$$IMAGE_REGISTRY" ]; then echo "ci-image-publish: error: IMAGE_REGISTRY is not set" >&2; exit 2; fi
	$(registry_login)
	@if docker manifest inspect "$$IMAGE_REGISTRY/$(CI_IMAGE)" >/dev/null 2>&1; then \
		echo "ci-image-publish: $$IMAGE_REGISTRY/$(CI_IMAGE) exists"; \
	else $(CI_IMAGE_BUILD) -t "$$IMAGE_REGISTRY/$(CI_IMAGE)" . && docker push "$$IMAGE_REGISTRY/$(CI_IMAGE)"; fi

# A pipeline whose change touches nothing but deploy/envs/** (a promotion, a rollback, an env setting)
# trains, registers and promotes nothing: Argo CD deploys it from git, and ci-verify still renders and
# validates the chart for every env. The change is HEAD against MLOPS_DIFF_BASE (the merge request's
# base; default HEAD^, the previous commit of the branch).
define deploy_only
changed="$$(git diff --name-only "$${MLOPS_DIFF_BASE:-HEAD^}" HEAD 2>/dev/null)"; \
	[ -n "$$changed" ] && ! printf '%s\n' "$$changed" | grep -qv '^deploy/envs/'
endef

ci-train: ci-train-vars install ## CI job train: restore the run-cache, reproduce the pipeline (gate included), push
	@if $(deploy_only); then echo "ci-train: only deploy/envs/ changed: nothing to train"; \
	else $(MAKE) --no-print-directory pipeline-ci LOCK_CHECK=1; fi

# LOCK_CHECK=1 (ci-train): after dvc repro, `mlops lock-check` compares the lock it wrote with the
# committed one (reports/lock-check.json, shown in the review report); exit 8 when an output differs or
# the lock is stale (params.yaml reproducibility.fail_on_mismatch). After a failed repro (a gate failure)
# it still reports, without failing a second time. Retraining runs on new data: no lock check.
pipeline-ci:
	$(use_ci_remote)
	mlops check-params
	@dvc pull --run-cache --allow-missing || echo "ci: nothing restored from the DVC remote: stages will run"
	@mkdir -p reports; rc=0; bash -o pipefail -c 'dvc repro 2>&1 | tee reports/repro.log' || rc=$$?; \
	if [ -n "$(LOCK_CHECK)" ]; then \
		mlops lock-check --log reports/repro.log $$([ $$rc -eq 0 ] || echo --no-fail) || exit $$?; fi; \
	exit $$rc
	$(push_if_remote)

# Retraining never deploys by itself: the job reproduces the pipeline (gate included) and opens a review
# merge request from retrain/<date>; only its merge registers and promotes (main's pipeline). Started by
# the schedule, by hand, or by `mlops trigger-retrain` (drift job, Alertmanager) with MLOPS_RETRAIN_REASON.
ci-retrain: ci-retrain-vars install ## CI job retrain (schedule, dispatch, trigger): re-fingerprint, reproduce (gate included), push, open the review merge request retrain/<date>
	$(MAKE) --no-print-directory pipeline-ci
	@if [ -n "$$PROMOTE_PUSH_URL" ]; then git remote set-url --push origin "$$PROMOTE_PUSH_URL"; fi
	mlops retrain-mr --reason "$${MLOPS_RETRAIN_REASON:-scheduled retrain}"

# With a production record, the report compares the candidate with that champion on the test rows
# (fetched from the registry: MLFLOW_TRACKING_URI), so it needs the raw table and the test split.
ci-report: ci-report-vars install ## CI job report: write the review report, post or update the merge-request comment
	$(use_ci_remote)
	@if [ -f deploy/envs/production/model.yaml ] && [ ! -f data/processed/test.parquet ]; then \
		dvc pull --allow-missing data/raw/data.parquet data/processed/test.parquet models/model.safetensors models/model.onnx \
		|| echo "ci-report: test rows not restored from the DVC remote (DVC_REMOTE_URL): the champion comparison will name what is missing"; fi
	mlops report --post

ci-release: ci-release-vars install ## CI job release: build and push the images, register the gated model in MLflow with their digests (reports/registered.json)
	@if $(deploy_only); then echo "ci-release: only deploy/envs/ changed: nothing to release"; \
	else $(MAKE) --no-print-directory release-ci; fi

# The release builds and pushes the images, then registers the model version with their digests: under
# CI it stops before registering anything when there is
# no Docker engine (GitLab: a runner tagged docker-socket; GitHub: the socket every job container gets;
# Jenkins: the release agent's socket mount), or when the data the model version carries (the drift
# reference from the training rows, the evaluation rows promote compares candidate and champion on)
# cannot be pulled. Outside CI it registers what it has and builds local images when it can.
RELEASE_DATA := data/raw/data.parquet data/processed/train.parquet data/processed/test.parquet
# The images released with each model version, <record key>:<repository name>:<Dockerfile>. They are
# built and pushed first (tagged with the short commit sha); the version is then registered with their
# digests as tags image.<key> (`mlops register --image key=repository@sha256:...`), which `mlops
# promote` writes into the env's record and the chart deploys. The registered {name, version} goes to
# REGISTERED, the CI artifact the promote job reads: it promotes exactly that version (not whatever
# the alias `candidate` names by then).
RELEASE_IMAGES := server:mlops-serve:Dockerfile fetch:mlops-fetch:Dockerfile.fetch monitor:mlops-monitor:Dockerfile.monitor pipeline:mlops-pipeline:Dockerfile.pipeline
REGISTERED ?= reports/registered.json
define docker_engine
command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
endef

release-ci:
	@if [ "$$CI" = "true" ] && ! { $(docker_engine); }; then \
		echo "ci-release: error: no Docker engine$${DOCKER_HOST:+ at DOCKER_HOST=$$DOCKER_HOST} (docker info failed): the release builds and pushes the images, so nothing is registered; run the job where it gets one (see DOCKER_HOST in docs/reference/ci-variables.md)" >&2; \
		exit 2; fi
	$(use_ci_remote)
	@# the drift reference (reference.parquet in the model version) is sampled from the training rows
	@# and the evaluation rows (evaluation.parquet) promote compares candidate and champion on
	@dvc pull --allow-missing $(RELEASE_DATA) || { \
		if [ "$$CI" = "true" ]; then echo "ci-release: error: dvc pull from the DVC remote (DVC_REMOTE_URL) failed: nothing registered" >&2; exit 2; fi; \
		echo "ci-release: data not restored from the DVC remote: registered without a drift reference or evaluation rows"; }
	@if [ "$$CI" = "true" ]; then missing=; for f in $(RELEASE_DATA); do [ -f "$$f" ] || missing="$$missing $$f"; done; \
		if [ -n "$$missing" ]; then echo "ci-release: error: not in the DVC remote (DVC_REMOTE_URL):$$missing (the train job pushes them): without them the version has no drift reference and promote cannot compare it with the champion; nothing registered" >&2; exit 2; fi; fi
	@mkdir -p reports; rm -f $(REGISTERED); tag=$$(git rev-parse --short HEAD); images=; \
	if ! { $(docker_engine); }; then \
		echo "ci-release: no Docker engine here (outside CI): images not built; the version is registered without image digests (promote then deploys the env's values.yaml images)"; \
	else \
		if [ -n "$$IMAGE_REGISTRY" ]; then $(subst @,,$(registry_login)) || exit $$?; fi; \
		for spec in $(RELEASE_IMAGES); do \
			key=$${spec%%:*}; rest=$${spec#*:}; repo=$${IMAGE_REGISTRY:+$$IMAGE_REGISTRY/}$${rest%%:*}; \
			$(SERVE_BUILD) -f $${rest#*:} -t $$repo:$$tag . || exit $$?; \
			[ -n "$$IMAGE_REGISTRY" ] || continue; \
			docker push $$repo:$$tag || exit $$?; \
			ref=$$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' $$repo:$$tag | grep -m1 "^$$repo@sha256:") || { \
				echo "ci-release: error: no digest of $$repo:$$tag after docker push (docker inspect RepoDigests): nothing registered" >&2; exit 2; }; \
			echo "ci-release: $$key image $$ref"; images="$$images --image $$key=$$ref"; \
		done; \
		if [ -z "$$IMAGE_REGISTRY" ]; then \
			echo "ci-release: IMAGE_REGISTRY is not set (outside CI): images built, not pushed; the version is registered without image digests"; \
		elif ! docker manifest inspect "$$IMAGE_REGISTRY/$(CI_IMAGE)" >/dev/null 2>&1; then \
			$(CI_IMAGE_BUILD) -t "$$IMAGE_REGISTRY/$(CI_IMAGE)" . && docker push "$$IMAGE_REGISTRY/$(CI_IMAGE)" || exit $$?; \
		fi; \
	fi; \
	mlops register --json $$images > $(REGISTERED).tmp && mv $(REGISTERED).tmp $(REGISTERED) && cat $(REGISTERED)

# A production merge request's merge is a deploy-only commit on main: nothing is promoted, and `mlops
# sync-aliases` moves each env's MLflow alias to the version its record names at this commit (exit 6
# when the registry's weights sha256 differs from the record's). After a promotion it changes nothing.
ci-promote: ci-promote-vars install ## CI job promote (main): promote the released version to staging (commit) and open the production merge request; sync each env's alias with its record
	@if $(deploy_only); then echo "ci-promote: only deploy/envs/ changed: nothing to promote"; \
	else $(MAKE) --no-print-directory promote-ci; fi
	mlops sync-aliases

# REGISTERED: the release job's artifact (a missing file: exit 2 naming it).
promote-ci:
	@if [ -n "$$PROMOTE_PUSH_URL" ]; then git remote set-url --push origin "$$PROMOTE_PUSH_URL"; fi
	mlops promote --env staging --registered $(REGISTERED) --push
	mlops promote --env production --registered $(REGISTERED)
