# nnsig: the two commands a new user needs, and a few more.
#   make demo   set up .venv, train the MNIST MLP, capture, analyse, write the report
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev,torch,keras

.PHONY: demo test test-fast lint bench screenshot clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python examples/mnist_torch.py $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow and not browser" $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check nnsig_core adapters tests examples benchmarks

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_capture.py
	$(BIN)/python benchmarks/bench_analysis.py
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_diagnostics.py --out runs/bench_diagnostics.csv

screenshot: $(BIN)/.installed
	$(BIN)/python docs/make_screenshot.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
