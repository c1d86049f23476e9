# mechjax: `make demo` runs the main job on SmolLM2-135M; `make test` runs the suite.
# Both set everything up on a fresh clone, in either order: virtual environment, install,
# model fetch. The demo installs the library alone (no torch, no transformers) and fetches
# only its model; the tests add the test tools and the reference implementations.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= out/demo
# one stamp per install, so that either target finds what it needs whatever ran before
STAMP_BASE := $(VENV)/.installed-base
STAMP_TEST := $(VENV)/.installed-test

.PHONY: setup setup-demo fetch fetch-demo demo test test-fast lint clean

setup: $(STAMP_TEST)

setup-demo: $(STAMP_BASE)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP_BASE): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $(STAMP_BASE)

$(STAMP_TEST): pyproject.toml | $(PY)
	# torch 2.13.0 (CPU) and transformers are test-time references only, never imported by the library
	$(PY) -m pip install -q -e ".[test,reference]"
	touch $(STAMP_TEST) $(STAMP_BASE)

fetch-demo: setup-demo
	$(PY) -m mechjax.cli fetch smollm2-135m

fetch: setup
	$(PY) -m mechjax.cli fetch smollm2-135m
	$(PY) -m mechjax.cli fetch gemma3-270m
	$(PY) -m mechjax.cli fetch minilm-l6

demo: fetch-demo
	$(PY) scripts/demo.py --out $(OUT)

# two workers, one test file each at a time: XLA compiles on one thread, so the second
# core is otherwise idle during the many small compiles of the suite; a worker that dies
# ends the run with its error instead of being replaced
test: fetch
	$(PY) -m pytest -q -ra --durations=15 -n 2 --dist loadfile --max-worker-restart=0

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pyright

clean:
	rm -rf $(VENV) build dist *.egg-info out
