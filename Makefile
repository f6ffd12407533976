# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup.sh $(VENV)

demo: setup
	$(PY) -m patch_netvlad_ros.cli.demo

test: setup
	$(PY) -m pytest -q test

lint: setup
	$(PY) -m pytest -q test/test_lint.py

bench: setup
	$(PY) -m patch_netvlad_ros.cli.bench
