# The commands the README, CI and contributors use. Everything runs from a virtual environment
# that the first target to need it creates (one per interpreter, under .venv/).

# The interpreter the first venv was made with (.venv/python), so that a Python installed later does
# not move this checkout to a new venv; else Python 3.14 when there is one (it runs inference in an
# InterpreterPoolExecutor), else python3. PYTHON=... on the command line chooses another.
PYTHON ?= $(shell cat .venv/python 2>/dev/null || command -v python3.14 2>/dev/null || { test -x /opt/python3.14/bin/python3.14 && echo /opt/python3.14/bin/python3.14; } || command -v python3)
VENV ?= .venv/$(shell $(PYTHON) -c 'import sys; print("py%d%d" % sys.version_info[:2])')
BIN := $(VENV)/bin
N ?= 2

.PHONY: help install demo test repeat test-compose test-distributed test-browser test-cluster screenshots lint workers clean bench soak docs api

help:
	@echo "make demo     start Redis and 2 workers, answer the reference question, stop all"
	@echo "make test     run the test suite (not the compose, distributed and browser suites)"
	@echo "make repeat   TIMES=10 PYTEST_ARGS='tests/x.py::test_y' runs them TIMES times, each in its own session; lists failures"
	@echo "make test-compose      the real docker-compose.yml on a Docker engine (../shared/ensure-docker.sh; ~3 min)"
	@echo "make test-distributed  hosts as network namespaces, RTTs, a partition, Sentinel failover (root; ~4 min)"
	@echo "make test-browser      the dashboard's test in headless Chromium (apt-get install chromium)"
	@echo "make test-cluster      the product on a real Redis Cluster: 6 redis-servers on loopback ports (~40 s)"
	@echo "make api      serve the HTTP API and dashboard (AGENTQ_API_KEYS; agentq-api keygen makes one)"
	@echo "make lint     ruff and mypy"
	@echo "make bench    run the benchmarks (~15 min; ARGS=--quick for seconds), publish to docs/benchmarks"
	@echo "make workers  run N=$(N) workers against \$$AGENTQ_REDIS_URL until Ctrl-C"
	@echo "make soak     10 minutes at a steady rate (SOAK_SECONDS, SOAK_RATE): throughput, p99, lost/doubled, RSS"
	@echo "make docs     regenerate docs/settings.md and docs/result.md from the code"
	@echo "PYTHON=$(PYTHON)  VENV=$(VENV)"

# The product (agentq: agentq/, worker/, producer/) and its development tooling (agentq-tools:
# tools/), both editable; the tooling also registers the benchmark's and the tests' sources.
$(BIN)/.installed: pyproject.toml tools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,api,otel]' -e './tools[bench]'
	@command -v redis-server >/dev/null || $(BIN)/python -m pip install -q -e './tools[embedded]'
	@test -s .venv/python || echo '$(PYTHON)' > .venv/python
	@touch $@

install: $(BIN)/.installed

bench: install
	$(BIN)/agentq-bench --out bench-results --publish docs/benchmarks $(ARGS)

soak: install
	$(BIN)/python -m agentq_tools.soak

demo: install
	$(BIN)/agentq-demo

docs: install
	$(BIN)/python -m agentq_tools.docgen

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# A test, file, marker or suite TIMES times, each run a pytest session of its own (as in CI), then
# every failure with its message: put each new end-to-end test through 10 runs before it lands.
TIMES ?= 10
repeat: install
	$(BIN)/python -m agentq_tools.repeat --times $(TIMES) -- $(PYTEST_ARGS)

# Each test prints its figures ("figure: ..."), hence -s. DOCKER_HOST is taken from the
# environment, else from ../shared/ensure-docker.sh.
test-compose: install
	$(BIN)/python -m pytest -m compose -s tests/deploy $(PYTEST_ARGS)

test-distributed: install
	$(BIN)/python -m pytest -m distributed -s tests/distributed $(PYTEST_ARGS)

# A Redis Cluster of 3 primaries and 3 replicas on loopback ports (agentq_tools.cluster): kept out
# of `make test`, run by .ci/run.
test-cluster: install
	$(BIN)/python -m pytest -m cluster -s tests/cluster $(PYTEST_ARGS)

# The dashboard in a real headless Chromium (Debian's): kept out of `make test`, run by .ci/run.
test-browser: install
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

# Retake docs/dashboard.png and docs/dashboard-job.png from the browser test.
screenshots: install
	AGENTQ_SCREENSHOT_DIR=docs $(BIN)/python -m pytest -m browser -q

api: install
	$(BIN)/agentq-api

lint: install
	$(BIN)/ruff check agentq worker producer tools tests examples
	$(BIN)/ruff format --check agentq worker producer tools tests examples
	$(BIN)/mypy

workers: install
	@echo "starting $(N) workers against $${AGENTQ_REDIS_URL:-$${REDIS_URL:-redis://127.0.0.1:6379/0}}; Ctrl-C stops them all"
	@trap 'kill 0' INT TERM; for i in $$(seq $(N)); do $(BIN)/worker & done; wait

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info
