# Everything goes through the project's own virtualenv; `make demo` / `make test` set it up on a fresh machine.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
TORCH   ?= 2.13.0

.PHONY: install test lint demo bench bench-smoke clean

# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench

demo: install
	$(PY) -m gaitkd.demo

# Benchmarks (never part of `make test`): bench/results.json + bench/RESULTS.md, < 20 min on 2 cores.
bench: install
	$(PY) bench/suite.py

# The seconds-sized run of every section (CI), into a temp folder: checks that the suite runs, not speed.
bench-smoke: install
	$(PY) bench/suite.py --smoke

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
