# The two commands: `make test` and `make demo`. Both do all their own setup.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.wmsub-installed
PYTEST_ARGS ?=

.PHONY: test unit e2e demo venv cluster cluster-down checkpoint clean

test: $(STAMP) cluster
	$(VPY) -m pytest tests/unit tests/e2e $(PYTEST_ARGS)

unit: $(STAMP)            # no cluster needed
	$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

e2e: $(STAMP) cluster     # real Slurm on the dev cluster
	$(VPY) -m pytest tests/e2e $(PYTEST_ARGS)

demo: $(STAMP) cluster
	$(VPY) -m wmsub.dev.demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first: a CPU build here (the local wheel), a CUDA build on clusters (README).
	$(VPY) -m pip install -q torch==2.13.0
	# both installs in one venv: the login node's core and the generation extra
	$(VPY) -m pip install -q -e '.[gen,dev]'
	# The official Wan2.2 code, without its declared dependencies (see pyproject.toml).
	$(VPY) -m pip install -q --no-deps wan22==2.2.11
	touch $(STAMP)

cluster:
	bash slurm/devcluster.sh up

cluster-down:
	bash slurm/devcluster.sh down

clean:
	rm -rf $(VENV) logs outputs checkpoints
