# CommerceCore DBX. `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# every deploy script of the plan (squawk's locking checks); revert/ and verify/ undo and read
DEPLOY_SCRIPTS = $(shell find roles schema procedures views -name '*.sql' | LC_ALL=C sort)

.DEFAULT_GOAL := help
.PHONY: help install run test lint format pytest bench clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,standin]'
	@touch $@

install: $(STAMP) ## Create .venv and install the project with its tools

run: $(STAMP) ## Embedded PostgreSQL + deployed plan + demo data + gateway on http://127.0.0.1:8000 (REPLICA=1: + a streaming replica)
	$(BIN)/commercecore up $(if $(filter 1 yes true on,$(REPLICA)),--replica)

test: lint pytest ## Everything CI runs: lint, then all tests

lint: $(STAMP) ## ruff, mypy (strict) on gateway/ and commercecore/, sqlfluff on the SQL, squawk on the deploy scripts
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/sqlfluff lint --processes 2 roles schema procedures views revert verify
	$(BIN)/squawk --config .squawk.toml --reporter gcc $(DEPLOY_SCRIPTS)

format: $(STAMP) ## Rewrite Python and SQL in the house style
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/sqlfluff fix --processes 2 roles schema procedures views revert verify

pytest: $(STAMP) ## The test suite only
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP) ## Benchmarks against the database's own limit; results in bench/results/
	$(BIN)/python -m bench

clean: ## Stop the embedded PostgreSQL (data in .data/ is kept)
	-$(BIN)/commercecore pg stop
