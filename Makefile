# Everything needs only python3: the first target that runs creates .venv and installs the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# setuptools boxes a note into every editable install of a flat layout, that folders named
# like an installed package may shadow it; here they are the installed packages themselves.
QUIET_EDITABLE := PYTHONWARNINGS='ignore:Editable installation'

.PHONY: demo test bench dev clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(QUIET_EDITABLE) $(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)

## The main job: the conformance matrix over both bundled servers and a 2-node mixed cluster, both codecs.
demo: $(STAMP)
	$(PY) -m conformance --cluster-nodes 2

## Install and pass the tests, the type check and the linter.
test: $(STAMP)
	$(PY) -m pytest
	$(PY) -m mypy --strict protocol impl_select impl_asyncio conformance chatwire_client bench fuzz tools tests
	$(PY) -m ruff check .

## Benchmarks against the tutorial baseline and Redis pub/sub (when redis-server is installed).
bench: $(STAMP)
	$(QUIET_EDITABLE) $(PY) -m pip install --quiet -e '.[dev,bench,uvloop]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
