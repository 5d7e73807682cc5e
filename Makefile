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

test: setup lint
	@# Tests bind fixed loopback ports below 46000; keep the kernel's ephemeral ports (SIPp's and
	@# clients' local ports) above them so two test workers never collide (needs root; harmless if not).
	-@sysctl -q -w net.ipv4.ip_local_port_range="46000 60999" 2>/dev/null || echo "note: could not move the ephemeral port range; parallel tests may collide on ports"
	$(BIN)/python -m pytest -ra -n 2 --dist loadfile $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf var/run var/test
