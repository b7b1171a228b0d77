# ptp-switch. Two commands matter: `make demo` and `make test` (both run `make setup` first).
SHELL := /bin/bash
VENV  ?= $(CURDIR)/.venv
PY    := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup test test-unit test-property test-sim test-bpf test-lab demo bench fuzz clean lab-clean help

help:
	@echo "make setup   - install packages, kernel headers, venv (idempotent; needs root)"
	@echo "make test    - every test layer (unit, property, sim, bpf, lab)"
	@echo "make demo    - the default lab: ptp4l GM -> 3 ptp-switch TC hops (congested) -> ptp4l slaves"
	@echo "make bench   - benchmarks side by side with linuxptp, report in bench/results/"
	@echo "make fuzz    - the long dataplane and codec fuzz runs"
	@echo "make test-unit | test-property | test-sim | test-bpf | test-lab  - one layer"

setup:
	@bash scripts/setup.sh

# Lab tests mostly wait on ptp4l convergence, so three test files run side by side (pytest-xdist,
# one file per worker).
XDIST := -n 3 --dist loadfile

test: setup
	$(PYTEST) tests -q $(XDIST)

test-unit: setup
	$(PYTEST) tests/unit -q
test-property: setup
	$(PYTEST) tests/property -q
test-sim: setup
	$(PYTEST) tests/sim -q
test-bpf: setup
	$(PYTEST) tests/bpf -q
test-lab: setup
	$(PYTEST) tests/lab -q $(XDIST)

demo: setup
	$(PY) -m controlplane.services.demo $(DEMO_ARGS)

bench: setup
	$(PY) -m bench.run $(BENCH_ARGS)

fuzz: setup
	$(PY) -m bench.fuzz $(FUZZ_ARGS)

lab-clean: setup
	$(VENV)/bin/ptp-switch lab down --all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
