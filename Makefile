# Two entry points for a fresh machine: `make run` and `make test`. Both are idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint setup system venv clean bench

setup: system venv

system:
	bash scripts/setup-system.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: setup
	$(BIN)/hotline run

# The house's static checks: style and imports (ruff), types (mypy), the import contracts (import-linter).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Each test module binds only its own block of loopback ports, all below the kernel's ephemeral range
# (tests/support/ports.py), so parallel workers never collide and the machine's settings stay as they are.
test: setup lint
	$(BIN)/python -m pytest -ra -n 2 --dist loadfile $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf var/run var/test
