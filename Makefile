# transferctl: `make demo` and `make test` work from a fresh clone; they create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
# the suite runs on 2 workers (CI has 2 cores), whole files to a worker (a file's module fixtures
# train once), the longest files first (tests/conftest.py orders them; no reordering by xdist)
WORKERS ?= 2

.PHONY: install dev demo demo-table results checks test test-all test-fast lint typecheck imports bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(BIN)/python
	$(PIP) install --quiet -e .

dev: $(BIN)/python
	$(PIP) install --quiet -e ".[dev]"

# The transfer demo (offline, real digits, a few minutes on 2 cores): a source run on digits 0-4,
# then digits 5-9 from 3 labels per class starting from it, and the same target from scratch.
demo: install
	$(BIN)/transferctl finetune configs/demo/source.yaml
	@target=$$($(BIN)/transferctl finetune configs/demo/target.yaml) && \
	scratch=$$($(BIN)/transferctl finetune configs/demo/scratch.yaml) && \
	echo && echo "digits 5-9 from 3 labels per class: with transfer (target) vs from scratch" && \
	$(BIN)/transferctl compare $$target $$scratch

# Results anyone can rerun: every transfer method on real digits, 3 seeds each, through the real
# CLI; writes results/RESULTS.md and its plots. Finished runs in results/runs/ are reused and
# unfinished ones resumed, so a rerun continues after a crash. About 30 minutes on 2 idle cores.
results: install
	$(BIN)/python results/run.py

# the demo's table in README.md and docs/results.md, from the demo configs for each seed
demo-table: install
	$(BIN)/python results/demo.py

lint: dev
	$(BIN)/ruff check transferctl tests bench results
	$(BIN)/ruff format --check transferctl tests bench results

typecheck: dev
	$(BIN)/mypy

# the layers of pyproject.toml's [tool.importlinter]: a stage imports only the stages below it
imports: dev
	$(BIN)/lint-imports

# The docs (MkDocs, Material): the config reference must be what the schema renders (its field
# docstrings), and the site must build with --strict (a broken link or anchor fails)
.PHONY: docs reference
docs: dev
	$(BIN)/python -m transferctl.config.reference --check docs/config.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# rewrite docs/config.md from transferctl/config/ after editing a field or its docstring
reference: install
	$(BIN)/python -m transferctl.config.reference docs/config.md

# the checks before the suite, side by side (mypy alone takes most of their time)
checks: dev
	$(MAKE) --no-print-directory -j4 lint typecheck imports docs

# CI's target (under 10 minutes on 2 cores): everything but the `extended` tests
test: checks
	$(BIN)/python -m pytest -m "not extended" -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

# every test, the extended ones included (about a minute more)
test-all: checks
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

test-fast: dev
	$(BIN)/python -m pytest -m "not slow" -n $(WORKERS) --dist loadfile --no-loadscope-reorder

# The benches, side by side in one invocation, written to bench/RESULTS.md (~10 minutes on 2 cores)
bench: install
	$(BIN)/python bench/report.py --out bench/RESULTS.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
