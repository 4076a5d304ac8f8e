# dct-gen: every target sets up .venv/ itself, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED := 0

.PHONY: venv test test-slow test-tf220 lint format demo bench clean

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

## make test-tf220: the default suite again on TensorFlow 2.20 (the TPU build's version), in
## its own environment .venv-tf220/.
VENV_TF220 := .venv-tf220
STAMP_TF220 := $(VENV_TF220)/.stamp-install
$(STAMP_TF220): setup.py $(STAMP)
	@test -x $(VENV_TF220)/bin/python || $(PYTHON) -m venv $(VENV_TF220)
	DCT_GEN_TF_VERSION=2.20.0 $(VENV)/bin/uv pip install --quiet --python $(VENV_TF220)/bin/python -e '.[test]'
	@touch $(STAMP_TF220)

test-tf220: $(STAMP_TF220)
	$(VENV_TF220)/bin/python -c "import tensorflow as tf; assert tf.__version__.startswith('2.20'), tf.__version__"
	$(VENV_TF220)/bin/python -m pytest -q -m "not slow" tests

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
	$(PY) bench/guidance.py
	$(PY) bench/quality.py

clean:
	rm -rf $(VENV) $(VENV_TF220) runs .pytest_cache .ruff_cache *.egg-info
