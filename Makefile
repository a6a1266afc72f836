# The two set-up commands (README): `make demo` and `make test`. Each makes its own venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
CONFIG ?= config.example.toml
WORKERS ?= auto

.PHONY: venv demo run test test-slow lint typecheck bench bench-morning clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

# The bridge, a demo municipality and the loopback fakes, with a page to play them on.
DEMO_PORT ?= 8000
demo: venv
	$(BIN)/skolebro demo --port $(DEMO_PORT)

# The bridge on the embedded database with the example roster and config.example.toml.
run: venv
	$(BIN)/skolebro --config $(CONFIG) init
	$(BIN)/skolebro --config $(CONFIG) import-roster tests/data/example.csv
	$(BIN)/skolebro --config $(CONFIG) run

test: venv
	bash .ci/services
	bash .ci/browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bridge
	$(BIN)/pytest -n $(WORKERS) -q

test-slow: venv
	bash .ci/services
	$(BIN)/pytest -n $(WORKERS) -q -m slow || [ $$? -eq 5 ]  # 5: no slow tests collected

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bridge

bench: venv
	$(BIN)/python bench/bench_understand.py
	$(BIN)/python bench/bench_roster.py

# Issue #10: the morning rush replayed against `skolebro run` (about 10 minutes); see bench/RESULTS.md.
bench-morning: venv
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python bench/bench_morning.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Re-extract the texts people read and merge them into the nb/nn/en catalogs.
messages: venv
	$(BIN)/pybabel extract --no-default-keywords -k _ -k translate:2 --omit-header \
	  --no-location -w 100 -o bridge/i18n/skolebro.pot bridge
	$(BIN)/pybabel update -i bridge/i18n/skolebro.pot -d bridge/i18n -D skolebro -w 100
