# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install opencl clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $(STAMP)

install: $(STAMP)

# A usable OpenCL device, or the one command that gives one (installs Debian's PoCL as root with apt)
opencl: $(STAMP)
	@bash .ci/ensure-opencl $(BIN)/python

demo: $(STAMP) opencl
	$(BIN)/hetero demo

test: $(STAMP) opencl
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) opencl
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
