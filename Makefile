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
	# nnU-Net v1's Generic_UNet, for the tests that read v1 models; its declared dependencies
	# are old, so it goes without them into a folder of its own, off the import path.
	$(VENV)/bin/pip install --no-deps --target $(VENV)/nnunet_v1 nnunet==1.7.1
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nnunet-transfer demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -n auto --dist loadgroup --durations=15

benchmark: $(STAMP)
	$(VENV)/bin/python scripts/benchmark_strategies.py
