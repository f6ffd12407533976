# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-quick lint bench

setup:
	@bash scripts/setup.sh $(VENV)

demo: setup
	$(PY) -m patch_netvlad_ros.cli.demo

# Every test, the slow ones included (CI runs this), with the 25 slowest listed at the end.
# One process: on 2 cores pytest-xdist's workers cost more CPU than they saved (each builds
# the session's corridor map and descriptors again; the tests are mostly CPU-bound).
test: setup
	$(PY) -m pytest -q --durations=25 test

# While developing: the same without the tests marked slow (setup.cfg lists the markers).
test-quick: setup
	$(PY) -m pytest -q --durations=25 -m 'not slow' test

lint: setup
	$(PY) -m pytest -q test/test_lint.py

bench: setup
	$(PY) -m benchmarks.bench
