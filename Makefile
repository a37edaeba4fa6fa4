# Every workflow of the repository. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export STEMKUBE_TOOLS_BIN ?= $(CURDIR)/.cache/bin

COMPONENTS := contract client api operator separator-image
VENV_INPUTS := requirements-dev.txt $(foreach c,$(COMPONENTS),$(c)/pyproject.toml)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z][a-zA-Z0-9_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: run
run: venv ## run the service in local mode on http://localhost:8000 (more flags: RUN_ARGS="--workers 2 ...")
	$(VENV)/bin/stemkube-api --local $(RUN_ARGS)

.PHONY: venv
venv: $(VENV)/.installed ## the development virtual environment (.venv), components in editable mode

$(VENV)/.installed: $(VENV_INPUTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	  || { echo "make venv: need Python 3.11 as $(PYTHON) (set PYTHON=...)"; exit 1; }
	@echo "make venv: installing stemkube's Python environment into $(VENV): torch and Demucs (the"
	@echo "  separator), FastAPI, the Kubernetes and S3 clients and the test tools; about 2 GB to"
	@echo "  download and unpack: a few minutes the first time, nothing after that"
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt \
	  $(foreach c,$(COMPONENTS),-e ./$(c))
	touch $@
	@echo "make venv: ready"

.PHONY: tools
tools: ## build the test tier's binaries into .cache/bin (no-op when fresh)
	tools/build.sh

.PHONY: lint
lint: venv ## ruff, mypy and import-linter (the packages' layering, [tool.importlinter])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: test
test: venv tools lint ## everything CI runs: lint, unit, integration and e2e tests (the real node too)
	$(VENV)/bin/pytest tests/unit tests/integration tests/e2e

.PHONY: test-unit
test-unit: venv ## unit tests only (milliseconds, no tools needed)
	$(VENV)/bin/pytest tests/unit

.PHONY: test-integration
test-integration: venv tools ## integration tests against the real control plane and MinIO
	$(VENV)/bin/pytest tests/integration

.PHONY: test-e2e
test-e2e: venv tools ## the Helm chart installed into the tier's control plane, driven end to end
	$(VENV)/bin/pytest tests/e2e -m "not node"

.PHONY: test-node
test-node: venv tools ## the chart on a real kubelet + containerd node only (root, Docker, ~11 GB free disk)
	$(VENV)/bin/pytest tests/e2e -m node

IMAGE_TAG ?= 0.1.0
DOCKER ?= docker

# Each image: its Dockerfile, build context and base-image variable.
IMAGES ?= api operator separator local
image_file_api := api/Dockerfile
image_context_api := .
image_base_api := BASE_IMAGE
image_file_operator := operator/Dockerfile
image_context_operator := .
image_base_operator := BASE_IMAGE
IMAGE_SOURCE_LABEL := org.opencontainers.image.source=https://github.com/stemkube/stemkube
image_file_separator := separator-image/Dockerfile
image_context_separator := .
image_base_separator := SEPARATOR_BASE_IMAGE
image_file_local := api/local.Dockerfile
image_context_local := .
image_base_local := SEPARATOR_BASE_IMAGE

.PHONY: images
images: $(addprefix image-,$(IMAGES)) ## build the images (IMAGES="api operator"; BASE_IMAGE=... / SEPARATOR_BASE_IMAGE=... SEPARATOR_PYTHON=base for local bases)

.PHONY: image-%
image-%:
	$(DOCKER) build -q -f $(image_file_$*) -t stemkube/$*:$(IMAGE_TAG) \
	  $(if $($(image_base_$*)),--build-arg BASE_IMAGE=$($(image_base_$*))) \
	  $(if $(filter SEPARATOR_BASE_IMAGE,$(image_base_$*)),$(if $(SEPARATOR_PYTHON),--build-arg PYTHON=$(SEPARATOR_PYTHON))) \
	  $(image_context_$*)
	@# Each build leaves the image it replaced dangling, ~5 GB for the separator: tens of GB after
	@# a few sessions, and CI's disk is where that ran out. Only images with our source label go.
	$(DOCKER) image prune -f --filter dangling=true --filter label=$(IMAGE_SOURCE_LABEL) >/dev/null

.PHONY: docker-up
docker-up: ## start a Docker engine if none answers (root; CI)
	hack/docker-up.sh

LOCAL_BASE_IMAGE ?= stemkube/python-base:3.11-bookworm

.PHONY: base-image
base-image: docker-up ## a Python 3.11 base image from Debian packages (no registry needed)
	hack/debian-base.sh $(LOCAL_BASE_IMAGE)

KIND_CLUSTER ?= stemkube
KIND := $(STEMKUBE_TOOLS_BIN)/kind
HELM := $(STEMKUBE_TOOLS_BIN)/helm
KUBECTL := $(STEMKUBE_TOOLS_BIN)/kubectl

.PHONY: kind-up
kind-up: ## create a kind cluster (needs Docker) with the API's port on localhost:8000
	tools/build.sh kind kubernetes helm
	$(KIND) create cluster --name $(KIND_CLUSTER) --config hack/kind.yaml

.PHONY: kind-load
kind-load: images ## build the images and load them into the kind cluster
	for image in api operator separator; do $(KIND) load docker-image --name $(KIND_CLUSTER) stemkube/$$image:$(IMAGE_TAG); done

.PHONY: kind-deploy
kind-deploy: ## helm install the chart into kind (bundled MinIO, CPU separations)
	$(HELM) upgrade --install stemkube charts/stemkube --namespace stemkube --create-namespace \
	  --values charts/stemkube/values-kind.yaml --wait --timeout 10m

.PHONY: kind-gpu
kind-gpu: ## make the kind node advertise nvidia.com/gpu: 1 (scheduling only; work runs on CPU)
	$(KUBECTL) proxy --port=8011 & pid=$$!; sleep 2; \
	curl -fsS -H 'Content-Type: application/json-patch+json' -X PATCH \
	  -d '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"1"}]' \
	  http://127.0.0.1:8011/api/v1/nodes/$(KIND_CLUSTER)-control-plane/status; kill $$pid

.PHONY: kind-e2e
kind-e2e: ## the README's curl flow against the chart in kind
	hack/kind-e2e.sh

.PHONY: kind-down
kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

.PHONY: clean
clean: ## remove the virtual environment and caches (keeps the built tools)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .test-logs

.PHONY: clean-tools
clean-tools: ## remove the built tools (the next make tools is a cold build)
	rm -rf .cache/bin

.PHONY: bench-separator
bench-separator: venv tools ## time stemkube-separate against bare Demucs apply_model (60 s, CPU)
	$(PY) separator-image/bench/bench_separator.py

# For a GPU machine without network or venv (Python and torch with CUDA only): the wheels come
# from separator-image/bench/gpu-wheels.sh, run beforehand where the package index is.
GPU_WHEELS ?= .cache/gpu-wheels
.PHONY: bench-gpu
bench-gpu: ## on a GPU machine: the separator's GPU benchmark from the wheels in GPU_WHEELS (about 4 min)
	bash separator-image/bench/bench-gpu.sh $(GPU_WHEELS)

.PHONY: bench-operator
bench-operator: venv tools ## operator latency over 100 and 1,000 SeparationJobs at once (p50/p95/p99, API calls and CPU by process) and through a real Kueue, etcd bytes per finished job, memory with 10,000 finished
	PYTHONPATH=. $(PY) operator/bench/bench_operator.py

.PHONY: bench-api
bench-api: venv tools ## API upload throughput vs direct MinIO, peak RSS for 1 GB, status req/s with 1,000 jobs
	PYTHONPATH=. $(PY) api/bench/bench_api.py

.PHONY: bench
bench: bench-separator bench-operator bench-api ## every benchmark
