# Set-up and the two entry points of the README. The virtual environment is made once and
# refreshed when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test benchmark

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nnunet-transfer demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n auto --dist loadgroup --durations=15

benchmark: $(STAMP)
	$(VENV)/bin/python scripts/benchmark_strategies.py
