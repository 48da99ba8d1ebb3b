# make demo  - set up .venv and compare a small and a big model on the embedded digits set
# make test  - set up .venv (and, as root, the Debian packages of the optional tests) and run the test suite
# make test-fast - the same, without the tests marked slow
# make deploy-check - a bundle predicted, evaluated and served from a fresh venv without torch (needs PyPI)
# Works offline: torch/torchvision come from the local wheel cache where this machine has one.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.14.1 torchvision==0.29.1


.PHONY: demo test test-fast lint setup clean deploy-check
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/daxiao demo

test: setup
	.ci/system-packages
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"
deploy-check: setup
	BIN=$(BIN) .ci/deploy-check

lint: setup
	$(BIN)/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs .pytest_cache
