# Set-up and the two everyday commands. `make quick` runs the main job, `make test` the tests;
# both create the environment first if it is missing.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.install.stamp
RESULTS ?= results/quick

.PHONY: install data quick test test-all bench clean

install: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch (an unpinned torch pulls a multi-GB CUDA build).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

data:
	bash scripts/fetch_data.sh

quick: install
	bash scripts/quick.sh $(RESULTS)

test: install
	$(BIN)/pytest -q

test-all: install
	$(BIN)/pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) .pytest_cache
