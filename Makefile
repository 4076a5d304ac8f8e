# dct-gen: every target sets up .venv/ itself, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED := 0

.PHONY: venv test test-slow lint format demo bench clean

# (Re)create the virtual environment whenever setup.py changes.
$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

## make test: the default suite (everything not marked slow).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

## make test-slow: the long end-to-end tests (marker `slow`).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests || [ $$? -eq 5 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## make demo: the representation on the real photos bundled with scikit-image and scikit-learn.
demo: $(STAMP)
	$(PY) -m dct_gen.demo --out runs/demo

## make bench: every benchmark (each prints its figures and ratios against its baseline).
bench: $(STAMP)
	$(PY) bench/codec.py
	$(PY) bench/beam.py
	$(PY) bench/input_pipeline.py
	$(PY) bench/train.py
	$(PY) bench/libjpeg_agreement.py
	$(PY) bench/structural_mask.py
	$(PY) bench/sample.py
	$(PY) bench/quality.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
