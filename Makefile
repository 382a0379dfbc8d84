# Set-up and the two everyday commands. `make quick` runs the main job, `make test` the tests;
# both create the environment first if it is missing. The environment includes the optional
# optimizer packages (the `optimizers` extra), so every registry entry is tested.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.install.stamp
RESULTS ?= results/quick
# make quick's workers (one cell per usable core: cells are independent, each worker gets one thread)
# and make test's (pytest-xdist, one test file per worker: a file's fixtures are built once)
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: install data quick test test-all bench bench-fast clean

install: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch (an unpinned torch pulls a multi-GB CUDA build).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,optimizers]"
	touch $(STAMP)

data:
	bash scripts/fetch_data.sh

quick: install
	$(BIN)/suite-study study=quick study.workers=$(WORKERS) results_dir=$(RESULTS)

test: install
	$(BIN)/pytest -q -n $(WORKERS) --dist loadfile

test-all: install
	$(BIN)/pytest -q -n $(WORKERS) --dist loadfile -m "slow or not slow"

# Benchmarks for real (tens of minutes): pytest-benchmark JSON, the loop ratios and the matmul
# fraction, all under $(BENCH); suite-report turns bench/*.json into a throughput table and figure.
# Narrow the grid with OPTSUITE_BENCH_TASKS/_OPTIMIZERS/_BATCHES/_DEVICE/_THREADS (suite/bench/steps.py).
BENCH   ?= results/bench
bench: install
	mkdir -p $(BENCH)
	$(BIN)/pytest -q tests/benchmarks --benchmark-only -o addopts="" -m "not slow" --benchmark-disable-gc \
		--benchmark-json=$(BENCH)/benchmarks.json
	$(BIN)/python -m suite.report.benchmarks $(BENCH)/benchmarks.json $(BENCH)
	$(BIN)/python scripts/bench_loop.py --out $(BENCH)

# CI: every step benchmark once on the tiny grid, the loop harness, and the JSON -> table step
# (well under a minute; the numbers land in the git-ignored results/tmp-bench-fast and mean nothing).
bench-fast: install
	mkdir -p results/tmp-bench-fast
	OPTSUITE_BENCH=fast $(BIN)/pytest -q -o addopts="" -p no:cacheprovider --benchmark-disable-gc \
		tests/benchmarks/test_steps.py tests/benchmarks/test_loops.py --benchmark-json=results/tmp-bench-fast/fast.json
	$(BIN)/python -m suite.report.benchmarks results/tmp-bench-fast/fast.json results/tmp-bench-fast

clean:
	rm -rf $(VENV) .pytest_cache
