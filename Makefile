# Two entry points: `make search` (the main job) and `make test` (lint + test suite).
# Both create .venv with plain pip (torch/torchvision wheels come from local disk) if it is missing;
# the ray extra is installed too (about 20 s), so the Ray backend is tested like the others, and mmdet's
# pure-torch loss files for the export's conformance tests.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: search test test-quick lint format venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,ray,mmdet-test,tensorboard]'
	# MMDetection conformance tests: mmdet's pure-torch loss files, without its compiled dependencies.
	$(PY) -m pip install --quiet --no-deps mmengine==0.10.7 mmcv-lite==2.2.0 mmdet==3.3.0
	touch $(STAMP)

search: $(STAMP)
	$(PY) -m autoloss search

lint: $(STAMP)
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

# On every core (pytest-xdist); a module's tests stay on one worker so its shared fixtures run once.
PARALLEL := -n auto --dist loadscope

test: lint
	$(PY) -m pytest -q $(PARALLEL)

# While developing: everything but the tests marked slow (whole searches, kills, Ray).
test-quick: lint
	$(PY) -m pytest -q $(PARALLEL) -m "not slow"

format: $(STAMP)
	$(PY) -m ruff format src tests bench
	$(PY) -m ruff check --fix src tests bench

clean:
	rm -rf .venv
