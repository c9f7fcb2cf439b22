# Two commands for a newcomer: `make run` and `make test`. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tool and its tests use (checked, installed only when missing).
DEB_PACKAGES := iproute2 nftables procps time chromium chromium-driver tcpdump nginx redis-server

.PHONY: run test lint typecheck unit kernel-tests e2e bench deps venv clean

# The main job: diagnose this host's TCP connection lifecycle.
run: deps venv
	$(BIN)/tcpdoctor doctor

test: deps venv lint typecheck
	bash scripts/pytest-all.sh

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

# Byte-compile first, as a regular install does: start-up time is part of what we measure,
# and an environment with PYTHONDONTWRITEBYTECODE would otherwise compile on every run.
bench: deps venv
	$(BIN)/python -m compileall -q src
	$(BIN)/python benchmarks/run.py

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 4; fi; \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q src
	touch $(STAMP)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
