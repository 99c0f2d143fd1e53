# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up, and so
# does `make docs` (the reference in docs/, built as a site with mkdocs --strict).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test matrix demo bench docs venv clean

venv: $(STAMP)

# Reinstall when the project's dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,docs]'
	touch $(STAMP)

# Two workers: the suite is mostly waiting on loopback HTTP and subprocesses, and the machine
# (and CI) has two cores; every test passes with and without -n.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2

# The end-to-end subset (plan, apply, drift, rollback, import, conflicts) once per reading of
# the emulator's undocumented-AWS behaviours: the defaults, every alternative value of every
# named behaviour (reconciler/emulator/behaviours.py), and --validation sync. A table at the
# end, then "N passed, M failed" (readings); logs in build/matrix/. The cheap part, a compact
# lifecycle under the readings that matter most, is tests/matrix/test_readings.py in `make test`.
matrix: $(STAMP)
	$(BIN)/python tests/matrix/run_matrix.py $(ARGS)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The performance targets (docs/performance.md) measured against the emulator (quotas on,
# time-scaled): prints ratios. Then watch's time to detection and calls per event (moto's
# EventBridge and SQS, docs/watch.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py
	$(BIN)/python benchmarks/watch.py
	$(BIN)/python benchmarks/emulator.py
	$(BIN)/python benchmarks/state.py

# The reference site, into site/: every page, link and anchor must resolve (--strict turns
# each warning into a failure; --quiet would hide them from the count, so it is not used).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis site
