VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo quickstart test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/shortcut_detection.py --logdir logs/shortcut

quickstart: $(STAMP)
	$(PY) examples/quickstart.py --logdir logs/quickstart

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check lightning_xai tests examples benchmarks
	$(VENV)/bin/mypy lightning_xai

clean:
	rm -rf $(VENV) lightning_logs logs
