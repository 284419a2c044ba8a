# `make demo` and `make test` work on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BASE := $(VENV)/.base-$(HASH)
TESTING := $(VENV)/.test-$(HASH)
# torch is pinned to the CPU wheel this project's machines carry; a bare `torch`
# would pull gigabytes of CUDA. ray runs the pipelines' Ray executor test; lora (peft) the LoRA tests.
TEST_EXTRAS := dev,postgres,models,serving,redis,ray,lora
TORCH := torch==2.13.0

.PHONY: demo test lint bench clean install

$(BASE): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "loopstack needs Python 3.11 or newer"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[postgres,redis]"  # the demo runs on SQLite, or on PostgreSQL + Redis with --backend services
	rm -f $(VENV)/.base-*
	touch $@

$(TESTING): $(BASE)
	$(BIN)/python -m pip install --quiet -e ".[$(TEST_EXTRAS)]" "$(TORCH)"
	rm -f $(VENV)/.test-*
	touch $@

install: $(BASE)

demo: $(BASE)
	$(BIN)/loopstack demo --path loopstack-demo --fresh

test: $(TESTING)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(TESTING)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(TESTING)
	bash bench/anchors.sh
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) loopstack-demo .pytest_cache .ruff_cache
