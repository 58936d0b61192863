# Two commands set everything up on a fresh machine: `make run` and `make test`.
# torch is installed first from TORCH_SPEC: the CPU build by default; on a GPU machine use e.g.
#   make install TORCH_SPEC='torch==2.13.0 torchvision' PIP_INDEX='--index-url https://download.pytorch.org/whl/cu128'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_INDEX ?=
EXTRAS ?= dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: install run test test-unit lint revision bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_INDEX) $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

## Start the service on http://127.0.0.1:$(PORT) (tiny profile on CPU); Ctrl-C stops it.
run: install
	$(BIN)/python -m serving

## Run the whole test suite (what CI runs).
test: install
	$(BIN)/python -m pytest --durations=25

## The fast tier: tests marked unit, no Ray, one worker per core (UNIT_WORKERS=1: in one process).
UNIT_WORKERS ?= auto
test-unit: install
	$(BIN)/python -m pytest -m unit -q -n $(UNIT_WORKERS)

## Lint, format check and type check (what CI runs before the tests).
## All three run, so one run shows every finding; any finding fails it.
lint: install
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/mypy || status=1; \
	exit $$status

## Add a schema revision from the difference between storage/tables.py and the newest revision:
##   make revision m="add api keys"   (then read and edit storage/migrations/versions/<new file>)
##   It compares against a scratch SQLite database brought to the newest revision first; the new
##   file is storage/migrations/versions/NNNN_<what_changes>.py with the next number as its id.
revision: install
	@test -n "$(m)" || { echo 'usage: make revision m="what changes"'; exit 2; }
	next=$$(printf '%04d' $$(( $$(ls storage/migrations/versions | grep -c '^[0-9]\{4\}_') + 1 ))) && \
	scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	$(BIN)/alembic -x url=sqlite:///$$scratch/head.db upgrade head && \
	$(BIN)/alembic -x url=sqlite:///$$scratch/head.db revision --autogenerate --rev-id "$$next" -m "$(m)"

## Print benchmark figures and write benchmarks/results/latest.json (+ throughput.json, registry.json,
## throughput_optimized.json: the same status, submission and overhead figures in Serve's throughput-optimized mode).
bench: install
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.throughput --json benchmarks/results/throughput.json
	$(BIN)/python -m benchmarks.registry --json benchmarks/results/registry.json
	# Serve's throughput-optimized mode (direct ingress, gRPC between deployments) against the above
	RAY_SERVE_THROUGHPUT_OPTIMIZED=1 $(BIN)/python -m benchmarks --only status,submit,overhead \
		--output benchmarks/results/throughput_optimized.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
