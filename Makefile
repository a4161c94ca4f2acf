# Developer entry points. `make test` is what CI runs (see .ci/run).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint typecheck unit e2e e2e-inpod e2e-vllm tools helm cluster-up cluster-down demo golden crds generate bench bench-render bench-reconcile clean image image-push manifests

# The pinned tools (e2e/tools.sh) are linked here; put them ahead of anything installed.
export PATH := $(CURDIR)/.e2e/bin:$(PATH)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[ray,dev]'
	touch $(STAMP)

## install: create .venv with the operator, Ray's schema models and dev tools
install: $(STAMP)

## test: lint, type-check, unit tests, then the e2e suite on the local control plane
## (the README's test command)
test: lint typecheck unit e2e

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) helm
	$(BIN)/pytest -m "not e2e"

## tools: build (or reuse) the pinned Kubernetes, etcd, kwok, KubeRay and Helm binaries
tools:
	bash e2e/tools.sh

# Unit tests run helm on the chart and read KubeRay's CRDs from the pinned module.
helm:
	bash e2e/tools.sh helm kuberay

## cluster-up / cluster-down: the local control plane (see e2e/cluster.sh)
cluster-up: $(STAMP)
	bash e2e/cluster.sh up

cluster-down:
	bash e2e/cluster.sh down

## e2e: the end-to-end suite on the local cluster (brought up if needed), or on the
## cluster E2E_KUBECONFIG names
e2e: $(STAMP)
	if [ -z "$${E2E_KUBECONFIG:-}" ]; then bash e2e/cluster.sh up; fi
	$(BIN)/pytest -p no:cacheprovider -m "not vllm" e2e

## e2e-inpod: only the chart's operator as a real pod on the real node (helm install,
## helm test, liveness, peering, upgrade; part of `make e2e`)
e2e-inpod: $(STAMP)
	if [ -z "$${E2E_KUBECONFIG:-}" ]; then bash e2e/cluster.sh up; fi
	$(BIN)/pytest -p no:cacheprovider -s -m inpod e2e

## e2e-vllm: Ray Serve LLM's own app (engine vllm, only the engine stood in) on the real
## node; builds and imports its 10 GB image first. Not in `make test` (see the README)
e2e-vllm: $(STAMP)
	if [ -z "$${E2E_KUBECONFIG:-}" ]; then bash e2e/cluster.sh up; bash e2e/node.sh image ray-llm; fi
	$(BIN)/pytest -p no:cacheprovider -s -m vllm e2e

## demo: the README's main job: local cluster, the quick-start sample, what it became
demo: $(STAMP)
	bash e2e/demo.sh

## bench: the scale benchmark on the local control plane: the operator, a direct create,
## the ideal controller (bench/ideal.py) and KubeRay's own operator as the peer, each path
## in the same run (results in bench/results/scale.json); after the render and reconcile
## CPU benchmarks
bench: cluster-up bench-render bench-reconcile
	$(BIN)/python -m bench.scale

## bench-profile: py-spy's flame graph of the running operator while it converges 1000
## LLMDeployments on the local control plane (bench/results/operator_converge.svg)
bench-profile: cluster-up
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m bench.profile_converge

## bench-reconcile: CPU per reconcile against the in-memory API server, no cluster
## (results in bench/results/reconcile_cpu.json)
bench-reconcile: $(STAMP)
	$(BIN)/python -m bench.reconcile_cpu --profile

## bench-render: renders per second of the pure renderer for every golden case
## (results in bench/results/render.json)
bench-render: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider bench/test_render.py \
		--benchmark-json bench/results/render.json --benchmark-columns=mean,ops,rounds

## generate: regenerate golden files, the committed CRDs, the chart's values.yaml and
## values.schema.json, the README's values table and manifests/install.yaml after a
## deliberate change (tools/generate.py; review the diff). The tests only compare.
golden crds generate: $(STAMP) helm
	$(BIN)/python -m tools.generate

## image: build the operator image from images/operator/Dockerfile: with Docker (BuildKit)
## when its daemon answers, else with buildah and no registry (root); prints the local
## reference and the OCI archive (see images/operator/build.sh)
image:
	bash images/operator/build.sh operator

## image-push: push it where your cluster can pull it, and print the helm line that uses it:
## make image-push IMAGE=registry.example.com/team/llm-operator:0.2.0
image-push:
	@if [ -z "$(IMAGE)" ]; then \
		echo "usage: make image-push IMAGE=registry.example.com/team/llm-operator:0.2.0" >&2; exit 2; fi
	bash images/operator/build.sh push "$(IMAGE)"

## manifests: manifests/install.yaml from the chart's defaults; with IMAGE=<your image>,
## dist/install.yaml naming that image instead of the placeholder
manifests: $(STAMP) helm
	$(BIN)/python -m manifests.generate $(if $(IMAGE),--image "$(IMAGE)" --out dist/install.yaml,--out manifests/install.yaml)

clean: cluster-down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .e2e
