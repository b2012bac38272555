# The two commands: `make test` and `make demo`. Both do all their own setup.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.wmsub-installed
PYTEST_ARGS ?=

.PHONY: test unit procs ranks e2e demo venv cluster cluster-down checkpoint clean test-tools browser

test: $(STAMP) cluster test-tools browser
	$(VPY) -m pytest tests/unit tests/procs tests/ranks tests/e2e $(PYTEST_ARGS)

unit: $(STAMP)            # no cluster, one process: well under 2 minutes
	$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

# tests that start other processes: launch.py as a user runs it, interpreters and venvs,
# torch.compile, concurrent writers, a real browser (chromium for the explorer); no cluster
procs: $(STAMP) browser
	$(VPY) -m pytest tests/procs $(PYTEST_ARGS)

ranks: $(STAMP)           # several CPU ranks (gloo) per test, no cluster
	$(VPY) -m pytest tests/ranks $(PYTEST_ARGS)

e2e: $(STAMP) cluster test-tools  # real Slurm on the dev cluster
	$(VPY) -m pytest tests/e2e $(PYTEST_ARGS)

# tmux runs launch.py in a real terminal for the terminal tests (tests/e2e/test_terminal.py);
# installed as slurm/devcluster.sh installs the cluster's packages (apt, as root).
test-tools:
	@command -v tmux >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends tmux >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends tmux >/dev/null; }; }

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

# Headless chromium + chromedriver for the HTML explorer's browser test: Debian's packages,
# installed only when missing (as slurm/devcluster.sh installs the cluster's).
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing $(BROWSER_PACKAGES)"; export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; }; }

cluster-down:
	bash slurm/devcluster.sh down

clean:
	rm -rf $(VENV) logs outputs checkpoints
