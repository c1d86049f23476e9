# mechjax: `make demo` runs the main job on SmolLM2-135M; `make test` runs the suite.
# Both set everything up on a fresh machine: virtual environment, install, model fetch.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: setup fetch demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0 (CPU) and transformers are test-time references only, never imported by the library
	$(PY) -m pip install -q -e ".[test,reference]"
	touch $(STAMP)

fetch: setup
	$(PY) -m mechjax.cli fetch smollm2-135m
	$(PY) -m mechjax.cli fetch gemma3-270m
	$(PY) -m mechjax.cli fetch minilm-l6

demo: fetch
	$(PY) scripts/demo.py --out $(OUT)

# two workers, one test file each at a time: XLA compiles on one thread, so the second
# core is otherwise idle during the many small compiles of the suite
test: fetch
	$(PY) -m pytest -q -ra --durations=15 -n 2 --dist loadfile

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info out
