# Two commands on a fresh machine: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCALES := bot/locales
PYBABEL := $(BIN)/pybabel

.PHONY: run demo test lint typecheck pytest bench i18n i18n-init db-upgrade clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/waystation run

# Try everything without Telegram: http://127.0.0.1:8080 (throw-away database; Ctrl-C stops it).
demo: $(STAMP)
	$(BIN)/waystation demo

db-upgrade: $(STAMP)
	$(BIN)/waystation db upgrade

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy bot handlers models

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python tests/bench/run_all.py

# Extract messages from the code, merge them into every catalog, and check each compiles.
i18n: $(STAMP)
	$(PYBABEL) extract -F babel.cfg -k N_ -k ngettext:1,2 --no-location --sort-output \
		--project Waystation --copyright-holder "Waystation contributors" -o $(LOCALES)/messages.pot .
	$(PYBABEL) update -i $(LOCALES)/messages.pot -d $(LOCALES) --no-fuzzy-matching --ignore-obsolete
	$(PYBABEL) compile --statistics -d $(LOCALES)

# Start a new language: make i18n-init LANG=ru
i18n-init: $(STAMP)
	$(PYBABEL) init -i $(LOCALES)/messages.pot -d $(LOCALES) -l $(LANG)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info
