# Two commands matter: `make run` and `make test`. Both start from nothing but Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLES := hello stream fetch edge

.PHONY: run test lint bench examples clean

$(STAMP): pyproject.toml setup.py wasm_runtime/_hostcall.c
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

# The fleet tests run a real redis-server (Debian); without it, and not root, they are skipped.
test: $(STAMP)
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq redis-server >/dev/null || echo "test: apt-get install redis-server failed"; \
	  else echo "test: redis-server missing and not root: tests/fleet will be skipped"; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway routes edge wasm_runtime tests bench examples
	$(BIN)/mypy gateway routes edge wasm_runtime

# The proxy benchmark needs nginx and wrk (Debian); the wasm one (bench/wasm.py) the example
# components, `wasmtime serve` (dev extra) and workerd (npm, installed by the bench itself).
bench: $(STAMP) examples
	@if command -v wrk >/dev/null && (command -v nginx || test -x /usr/sbin/nginx) >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "bench: not root, not installing nginx-light wrk (install them yourself)"; \
	else apt-get install -y nginx-light wrk >/dev/null || echo "bench: apt-get install nginx-light wrk failed"; fi
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.wasm $(WASM_BENCH_ARGS)
	$(BIN)/python -m bench.held_streams

clean:
	rm -rf $(VENV) .edgefn .pytest_cache
