# Set-up is part of every target: a fresh machine needs nothing but python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/bootstrap.sh
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slaterec demo --out demo_output --overwrite

# the suite's files spread over the cores (pytest-xdist; at most 4 workers)
test: $(STAMP)
	$(PY) -m pytest -n logical --maxprocesses 4 --dist worksteal tests

bench: $(STAMP)
	$(PY) scripts/bench_simulator.py
	$(PY) scripts/bench_dataset.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache build *.egg-info
