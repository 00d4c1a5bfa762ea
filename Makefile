# Two commands do all the set-up (README): `make lab` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# TORCH=cpu: on a fresh environment, take torch/torchvision from PyTorch's CPU wheel index
# (about 5 GB less on Linux than the default CUDA build); if that index is unreachable, the default.
TORCH ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: lab test env env-dev hub-proxy lint benchmarks clean links student site site-teacher times grade

lab: env  ## create the environment (first time only) and open the course in JupyterLab
	$(BIN)/jupyter lab notebooks/00_start_here.ipynb

test: env-dev hub-proxy  ## create the environment with the test tools (first time only) and run every test
	$(BIN)/ruff check $(LINTED)
	$(BIN)/pytest

env: $(VENV)/.runtime-installed
env-dev: $(VENV)/.dev-installed

$(VENV)/.runtime-installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(filter cpu,$(TORCH)),$(BIN)/python -m pip install --timeout 20 --retries 1 \
		--index-url $(TORCH_CPU_INDEX) torch torchvision \
		|| echo "PyTorch's CPU index is unreachable: installing the default torch build")
	$(BIN)/python -m pip install -r requirements.txt -e .
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(BIN)/python -m pip install -r requirements-dev.txt
	touch $@

# JupyterHub's proxy (Node.js) for tests/test_jupyterhub.py, from npm into $(VENV)/node; without npm
# that test skips (CI installs npm and requires it).
CHP := $(VENV)/node/node_modules/.bin/configurable-http-proxy
hub-proxy: $(CHP)  ## JupyterHub's configurable-http-proxy from npm, for the JupyterHub test
$(CHP):
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error \
			configurable-http-proxy@5; \
	else echo "npm not found: tests/test_jupyterhub.py will skip (install Node.js and npm)"; fi

LINTED := helpers tests benchmarks notebooks $(wildcard tools)

lint: env-dev  ## the linter over code and lessons (also the first step of make test)
	$(BIN)/ruff check $(LINTED)

benchmarks: env-dev  ## time every notebook and the methods against peer libraries
	cd benchmarks && ../$(BIN)/python notebooks.py && ../$(BIN)/python notebooks.py --threads 1 \
		&& ../$(BIN)/python widgets.py \
		&& ../$(BIN)/python attribution.py && ../$(BIN)/python synthesis.py \
		&& ../$(BIN)/python grading.py

# Classroom tooling (TEACHING.md, README "For teachers"); nothing here executes a lesson.
links: env  ## write launch links + the Colab cell from [project.urls] Repository (HUB=https://...)
	$(BIN)/python -m tools.links $(if $(HUB),--hub $(HUB))

times: env  ## copy the lessons' measured times and memory from benchmarks/RESULTS.md everywhere
	$(BIN)/python -m tools.times

student: env  ## student copies in student/: solutions replaced by stubs, outputs cleared
	$(BIN)/python -m tools.student

JOBS ?= 1
grade: env  ## grade collected copies: make grade SUBMISSIONS=DIR [JOBS=2] -> DIR/gradebook.csv
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=DIR [JOBS=n]"; exit 2; }
	$(BIN)/python -m tools.grade "$(SUBMISSIONS)" --jobs $(JOBS)

SITE_TOOLS := latex2mathml>=3.77  # all the site needs beyond the runtime (formulas to MathML)

site: env  ## the students' offline static site in site/ from the stored outputs (no answers)
	$(BIN)/python -m pip install --quiet "$(SITE_TOOLS)"
	$(BIN)/python -m tools.site

site-teacher: env  ## the teacher's site in site-teacher/: the same pages with the answers
	$(BIN)/python -m pip install --quiet "$(SITE_TOOLS)"
	$(BIN)/python -m tools.site --teacher

clean:
	rm -rf $(VENV)
