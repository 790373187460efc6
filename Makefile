# Two commands do all the set-up on a fresh machine:
#   make run   — creates .venv, installs alignkit, runs `alignkit run` (tiny preset) into runs/demo
#   make test  — creates/updates .venv with the dev extras, installs Chromium if missing, runs the test suite
# torch is installed first, pinned to the CPU wheel this machine serves (2.13.0); pyproject accepts a range.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
PRESET ?= tiny
CHROMIUM := /usr/bin/chromium

.PHONY: run test install browser lint clean

# --no-compile: bytecode is written on first import instead (about 30 s less to install here).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile "$(TORCH)"
	$(PY) -m pip install -q --no-compile -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/alignkit run --preset $(PRESET)

# Headless Chromium for the report's browser test (tests/e2e/test_report_browser.py): Debian's package,
# never `playwright install`. About 20 s on 2 cores; `apt-get update` only when apt does not know chromium
# or its lists are stale. Without root/apt it only says so: the test then fails with the same advice, or
# skips with ALIGNKIT_SKIP_BROWSER=1.
browser:
	@if [ "$$ALIGNKIT_SKIP_BROWSER" = 1 ] || [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "make browser: $(CHROMIUM) is missing and installing it needs apt-get as root" \
			"(ALIGNKIT_SKIP_BROWSER=1 skips the browser test)" >&2; exit 0; fi; \
	echo "make browser: apt-get install chromium"; \
	export DEBIAN_FRONTEND=noninteractive; \
	install="apt-get install -y -qq --no-install-recommends chromium"; \
	{ apt-cache show chromium >/dev/null 2>&1 && $$install >/dev/null; } || \
		{ apt-get update -qq && $$install >/dev/null; } || \
		echo "make browser: installing chromium failed; the browser test will fail" >&2

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(VENV)/.installed-dev browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check alignkit tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
