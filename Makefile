# The README's two commands: `make demo` and `make test`. Both create the virtualenv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test lint bench-engine clean down

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/pdx demo

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: $(VENV)/.installed
	@$(PY) -m pytest -q -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check streams tests
	$(VENV)/bin/mypy streams

down: $(VENV)/.installed
	$(VENV)/bin/pdx dev down

clean: down
	rm -rf .pdx
