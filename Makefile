# The two commands a newcomer needs:  make demo  and  make test.
# Both create .venv when it is missing and install the project into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.srpo-installed
# Runs never touch the user's ZenML config or send analytics.
export ZENML_ANALYTICS_OPT_IN := false
export ZENML_DEBUG := false
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# OpenMP threads spin briefly, then sleep; with the default long spin, PyTorch slows down 5-20x
# whenever other jobs share the cores (docs/results.md). No cost measured on idle cores.
export GOMP_SPINCOUNT ?= 20000
DEMO_HOME := $(CURDIR)/.demo

.PHONY: install test demo clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install --quiet -c constraints.txt "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import srpo, zenml, torch, torchvision, open_clip, diffusers, pytest" # fail loudly if an install step failed
	touch $(STAMP)

install: $(STAMP)

# Two workers, whole files each (module fixtures built once): much of the suite waits on process
# start-up, imports and local servers, which a second worker overlaps: 16.4 min against 21.8 serial
# (TEST_WORKERS=0) on 2 cores, 2026-12-02; 9.1 min for 1143 tests on quiet cores, 2026-12-08.
TEST_WORKERS ?= 2

test: $(STAMP)
	d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	ZENML_CONFIG_PATH=$$d/zenml SRPO_CACHE=$$d/cache $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

DEMO_ENV := ZENML_CONFIG_PATH=$(DEMO_HOME)/zenml SRPO_CACHE=$(DEMO_HOME)/cache

# The shapes world: bootstrap (cached after the first run), then SRPO steering it, then the table.
demo: $(STAMP)
	mkdir -p $(DEMO_HOME)
	$(DEMO_ENV) $(VENV)/bin/zenml pipeline run pipelines.bootstrap.shapes_bootstrap --config configs/shapes_bootstrap.yaml
	$(DEMO_ENV) $(VENV)/bin/zenml pipeline run pipelines.training.srpo_training --config configs/shapes_demo.yaml
	@$(DEMO_ENV) $(PY) -m ops.summary shapes_bootstrap
	@$(DEMO_ENV) $(PY) -m ops.summary srpo_training

clean:
	rm -rf $(DEMO_HOME)
