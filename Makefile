# Two commands do all the set-up on a fresh machine:
#   make run   — creates .venv, installs alignkit, runs `alignkit run` (tiny preset) into runs/demo
#   make test  — creates/updates .venv with the dev extras and runs the test suite
# torch is installed first, pinned to the CPU wheel this machine serves (2.13.0); pyproject accepts a range.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
PRESET ?= tiny

.PHONY: run test install lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/alignkit run --preset $(PRESET)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(VENV)/.installed-dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check alignkit tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
