# The two commands of the README: `make run` (the whole series, embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= auto
ifeq ($(USE_CURRENT_ENV),1)
PY := $(shell command -v $(PYTHON))
STAMP := .setup-current-env
else
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
endif
export PYTHONUNBUFFERED := 1

.PHONY: setup browser run test bench agentfabric clean

setup: $(STAMP)

$(STAMP): scripts/setup.sh pyproject.toml $(wildcard requirements/*.txt)
	PYTHON=$(PYTHON) VENV=$(VENV) USE_CURRENT_ENV=$(USE_CURRENT_ENV) bash scripts/setup.sh
	touch $(STAMP)

browser:
	bash scripts/browser.sh

run: setup
	$(PY) -m helpers pipeline --profile $(PROFILE)

test: setup browser
	$(PY) -m pytest

bench: setup
	$(PY) -m helpers bench

# ModelScope's AgentFabric app in its own environment (.agentfabric/), against the latest run of PROFILE
agentfabric: setup
	PY=$(PY) bash scripts/agentfabric_app.sh --profile $(PROFILE) $(ARGS)

clean:
	rm -rf runs .pytest_cache
