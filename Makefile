# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo bench venv clean

venv: $(STAMP)

# Reinstall when the project's dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# Two workers: the suite is mostly waiting on loopback HTTP and subprocesses, and the machine
# (and CI) has two cores; every test passes with and without -n.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Benchmarks of product.md §9 against the emulator (quotas on, time-scaled): prints ratios.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
