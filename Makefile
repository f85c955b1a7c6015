# Two commands matter: `make run` and `make test`. Both start from nothing but Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLES := hello stream fetch

.PHONY: run test lint bench examples clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Example components are built, not committed; `edgefn build` caches them by content hash.
examples: $(STAMP)
	@for ex in $(EXAMPLES); do \
	  test -f examples/$$ex/app.py || continue; \
	  $(BIN)/edgefn build examples/$$ex -o examples/$$ex/$$ex.wasm || exit 1; \
	done

run: $(STAMP) examples
	$(BIN)/python -m examples.serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway routes edge wasm_runtime tests bench examples

bench: $(STAMP) examples
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .edgefn .pytest_cache
