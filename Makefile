# Two commands do all the set-up on a fresh machine:
#   make demo   - install into .venv and run the demo (model server + sidecar + traffic)
#   make test   - install into .venv (plus Debian prometheus, alertmanager, wrk) and run all tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-evidently drift-rates generate previews system-deps

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system-deps:
	./scripts/install-system-deps

demo: $(BIN)/.installed
	$(BIN)/modelmon demo $(ARGS)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(BIN)/.installed system-deps
	$(BIN)/ruff check exporter tests scripts
	$(BIN)/mypy
	$(BIN)/pytest $(ARGS) || [ $$? -eq 5 ]

# ARGS=--quick shortens both; other flags belong to one script: run it directly.
bench: $(BIN)/.installed system-deps
	$(BIN)/python tests/bench/bench_proxy.py $(ARGS)
	$(BIN)/python tests/bench/bench_drift.py $(ARGS)
	$(BIN)/python tests/bench/bench_join_buffer.py $(ARGS)
	$(BIN)/python tests/bench/bench_scrape.py $(ARGS)
	$(BIN)/python tests/bench/bench_slowloris.py $(ARGS)

# The drift benchmark with the Evidently comparison, in a venv of its own (Evidently pulls in
# scikit-learn, statsmodels, plotly, ...).
bench-evidently: $(BIN)/.installed
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q -e '.[bench]'
	.venv-bench/bin/python tests/bench/bench_drift.py $(ARGS)

drift-rates: $(BIN)/.installed
	$(BIN)/python tests/bench/drift_rates.py $(ARGS)

# The chart's copies of the generated rules, dashboards and routing, its values schema and the
# tables of helm/README.md come last: they are made from what the lines before write.
generate: $(BIN)/.installed
	$(BIN)/python -m modelmon.metrics.docs > docs/metrics.md
	$(BIN)/modelmon mixin --out alertmanager --runbook docs/runbook.md \
		--example-config alertmanager/mixin.example.yaml --dashboards grafana
	$(BIN)/python scripts/generate_chart.py

# The dashboards' PNG previews in grafana/previews/: the live stack (demo traffic that drifts,
# labels, a pushed regression model, Prometheus with the generated rules) for a few minutes, then
# every panel drawn from Prometheus with the boards' own queries.
previews: $(BIN)/.installed system-deps
	$(BIN)/python tests/dashboard_previews.py $(ARGS)
