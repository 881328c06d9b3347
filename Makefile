# The two quick-start commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test bench bench-large bench-shaped bench-smtp bench-metrics bench-routing bench-backlog lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/mailmux serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-large: $(STAMP)
	$(BIN)/python benchmarks/large.py

bench-shaped: $(STAMP)
	$(BIN)/python benchmarks/shaped.py

bench-smtp: $(STAMP)
	$(BIN)/python benchmarks/smtp.py

bench-metrics: $(STAMP)
	$(BIN)/python benchmarks/metrics.py

bench-routing: $(STAMP)
	$(BIN)/python benchmarks/routing.py

bench-backlog: $(STAMP)
	$(BIN)/python benchmarks/backlog.py

clean:
	rm -rf $(VENV)
