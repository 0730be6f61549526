# nnsig: the two commands a new user needs, and a few more.
#   make demo   set up .venv, train the MNIST MLP, capture, analyse, write the report
#   make test   set up .venv and run the whole test suite
#   make docs   build the documentation site into site/ (open site/index.html)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev,torch,keras

.PHONY: demo test test-fast test-js lint docs bench screenshot clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python examples/mnist_torch.py $(ARGS)

# The viewer's JavaScript unit tests: node's own runner, no npm packages. Skipped (with
# a message) when node is missing, except in CI, where that fails.
NODE_TESTS = if command -v node >/dev/null 2>&1; then node --test tests/js/; \
	elif [ -n "$$CI" ]; then echo "node is required in CI (apt-get install nodejs)"; false; \
	else echo "node not found: the viewer's JavaScript unit tests are skipped (install nodejs)"; fi

# pytest and the JavaScript tests both run; the target fails when either fails. pytest runs
# in two processes (pytest-xdist), each with its own Dask cluster and S3 server (fixtures),
# each computing on one thread (tests/conftest.py). `--dist worksteal`: each process starts
# on half of the tests (the longest modules first, tests/conftest.py) and an idle one takes
# over the other's remaining tests, so both finish together.
PYTEST_N = -n 2 --dist worksteal
test: $(BIN)/.installed
	@status=0; $(BIN)/python -m pytest $(PYTEST_N) $(ARGS) || status=1; \
	$(NODE_TESTS) || status=1; exit $$status

# The fast tests in two processes (pytest-xdist), as `test` runs them.
test-fast: $(BIN)/.installed
	@status=0; $(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_N) $(ARGS) || status=1; \
	$(NODE_TESTS) || status=1; exit $$status

test-js:
	@$(NODE_TESTS)

lint: $(BIN)/.installed
	$(BIN)/ruff check nnsig_core adapters tests examples benchmarks docs

# The documentation site (mkdocs.yml, docs/) into site/: open site/index.html from disk.
# --strict fails on any warning (a broken link, a docstring mkdocstrings cannot read).
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site
	@echo "docs: open site/index.html"

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_capture.py
	$(BIN)/python benchmarks/bench_analysis.py
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_diagnostics.py --out runs/bench_diagnostics.csv

screenshot: $(BIN)/.installed
	$(BIN)/python docs/make_screenshot.py

clean:
	rm -rf $(VENV) runs site .pytest_cache .hypothesis
