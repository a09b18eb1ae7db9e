# The README's commands. A fresh machine needs only: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: install demo test bench lint clean

# pip (not uv): torch==2.14.1 / torchvision==0.29.1 come from this machine's local wheels.
# The index warnings about local folders are noise; a failed install still fails the target.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing into $(VENV) (first time: about 3 minutes)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/unlearn demo $(DEMO_ARGS)

# Two pytest processes (pytest-xdist): most of a test's time is one process's Python, git, DVC,
# MLflow or Prefect, so a second one roughly halves the suite on 2 cores. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test: install
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# ruff (rule set in pyproject.toml) and the layering / size rules the unit tests enforce.
SOURCES := components pipelines benchmarks examples tests
lint: install
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/python -m pytest -q tests/unit/test_purity.py tests/unit/test_imports.py tests/unit/test_layout.py

clean:
	rm -rf .pytest_cache build *.egg-info

bench: install
	bash benchmarks/run.sh $(BENCH_ARGS)
