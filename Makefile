# One environment, one check command. `make run` and `make test` are the README's two commands.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,models,fast,dev
export ORT_DISABLE_TELEMETRY := 1

.PHONY: venv system run test check lint typecheck pytest bench soak peers clean

$(BIN)/autan: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

venv: $(BIN)/autan

run: venv
	$(BIN)/autan up

test: system check

# What the tests need from the system: strace (the air-gap test), bubblewrap (isolated
# workers), a headless Chromium (the dashboard's test). Installed with apt-get when missing
# and run as root; else, said what to install.
SYSTEM_TOOLS := strace:strace bwrap:bubblewrap chromium:chromium
system:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "install:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; fi; fi

check: venv lint typecheck pytest

lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

# Two test processes, each module on one (`--dist loadfile`: its fixtures stay together).
# Most tests wait on processes they started, so two halve the time even on two cores.
PYTEST_WORKERS ?= 2

pytest: $(VENV)/wheelhouse/.ready
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# A compiled wheel installed nowhere: the dependency-layer tests deploy a function needing it
# (the tests themselves reach no index).
$(VENV)/wheelhouse/.ready: | venv
	$(BIN)/pip download --quiet --only-binary=:all: --no-deps --dest $(VENV)/wheelhouse mmh3==5.1.0
	@touch $@

BENCHMARKS := echo_latency map_throughput embed_overhead cold_start reaction burst batching http_bridge isolation streaming layers fleet gpu_throughput

bench: venv
	@for name in $(BENCHMARKS); do $(BIN)/python -m benchmarks.$$name || exit 1; done

soak: venv
	$(BIN)/python -m benchmarks.soak

# Autan beside Ray Serve and Celery with Redis (benchmarks.peers), in an environment of its
# own (Ray and Celery stay out of make test's); Celery needs redis-server on the path.
PEERS_VENV ?= .venv-peers
peers:
	@command -v redis-server >/dev/null || echo "redis-server is missing: Celery is left out (apt-get install redis-server)"
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/pip install --quiet -e '.[cpu,models,fast,peers]'
	$(PEERS_VENV)/bin/python -m benchmarks.peers

clean:
	rm -rf $(VENV) $(PEERS_VENV) .mypy_cache .ruff_cache .pytest_cache
