# All set-up happens here: `make run` and `make test` each build .venv from scratch when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install -e '.[dev]'
	# dragonfly-opt 0.1.7 is an sdist whose setup.py imports numpy.distutils: it builds only
	# without isolation, against the stdlib distutils, after numpy and scipy are in place.
	SETUPTOOLS_USE_DISTUTILS=stdlib $(BIN)/pip install --no-build-isolation dragonfly-opt==0.1.7
	$(BIN)/pip check
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/python studies/tune_lambda.py --target-ms 80

test: venv
	$(BIN)/python -m pytest -q

.PHONY: venv run test
