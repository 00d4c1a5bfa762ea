# Two commands do all the set-up (README): `make lab` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: lab test env env-dev lint benchmarks clean

lab: env  ## create the environment (first time only) and open the course in JupyterLab
	$(BIN)/jupyter lab notebooks/00_start_here.ipynb

test: env-dev  ## create the environment with the test tools (first time only) and run every test
	$(BIN)/pytest

env: $(VENV)/.runtime-installed
env-dev: $(VENV)/.dev-installed

$(VENV)/.runtime-installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt -e .
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(BIN)/python -m pip install -r requirements-dev.txt
	touch $@

lint: env-dev
	$(BIN)/ruff check helpers tests benchmarks

benchmarks: env-dev  ## time every notebook and the methods against peer libraries
	cd benchmarks && ../$(BIN)/python notebooks.py && ../$(BIN)/python widgets.py \
		&& ../$(BIN)/python attribution.py && ../$(BIN)/python synthesis.py

clean:
	rm -rf $(VENV)
