VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo quickstart test lint docs docs-images bench bench-shortcut bench-alerts clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/shortcut_detection.py --logdir logs/shortcut

quickstart: $(STAMP)
	$(PY) examples/quickstart.py --logdir logs/quickstart

# the suite, and the pipeline's import layers (pyproject.toml [tool.importlinter]: no stage imports a later one)
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# the documentation site (mkdocs, material theme, API reference from the docstrings) into site/; warnings fail it
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# the pictures in the docs and the README's demo table, from one real demo run (headless Chromium screenshots of
# TensorBoard and the report; needs `apt-get install chromium`)
docs-images: $(STAMP)
	$(PY) tools/docs_images.py

lint: $(STAMP)
	$(VENV)/bin/ruff check lightning_xai tests examples benchmarks tools
	$(VENV)/bin/ruff format --check lightning_xai tests examples benchmarks tools
	$(VENV)/bin/mypy lightning_xai
	$(VENV)/bin/lint-imports

# the performance benchmarks: each prints one SUMMARY line; the whole monitor's cost first (fit with minus without,
# quiet and with 2 CPU-bound neighbours, resnet18 and the demo's CNN); about 50 minutes on 2 CPU cores
bench: $(STAMP)
	$(PY) benchmarks/bench_monitor.py
	$(PY) benchmarks/bench_monitor.py --neighbours 2
	$(PY) benchmarks/bench_monitor.py --model demo
	$(PY) benchmarks/bench_efficiency.py
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_logging.py
	$(PY) benchmarks/bench_ig_steps.py
	$(PY) benchmarks/bench_overhead.py

# the detection benchmark (shortcut vs controls, 5 seeds): about 7 minutes on 2 CPU cores
bench-shortcut: $(STAMP)
	$(PY) benchmarks/shortcut_detection.py

# the alert-truth suite (shortcut vs benign scenarios x 3 models x 3 seeds): trains and records every run into
# benchmarks/alert_truth/out/ and prints the report; about 190 CPU-minutes: 1 h 40 min on 2 quiet CPU cores
bench-alerts: $(STAMP)
	$(PY) benchmarks/alert_truth/run.py

clean:
	rm -rf $(VENV) lightning_logs logs
