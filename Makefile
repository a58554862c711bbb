# The two commands of the README:
#   make run    set up .venv and start Statuary (web UI, and the Discord bot when DISCORD_TOKEN is set)
#   make test   set up .venv with the test tools (and Chromium, PostgreSQL, Redis from Debian) and run every test
#
# torch comes first and alone: `pip install torch==2.13.0` takes a local CPU wheel where one is
# provided (as on the CI machines); elsewhere set TORCH_INDEX, e.g.
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu      (CPU-only machine, no CUDA download)

PYTHON ?= python3
VENV ?= .venv
TORCH_INDEX ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test install install-test system-test-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test system-test-deps

# Debian's chromium (driven by Playwright, never a downloaded browser), PostgreSQL and Redis
# (real servers the suite starts itself). Installed only when missing; needs root or sudo.
system-test-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: install
	$(VENV)/bin/statuary serve

test: install-test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
