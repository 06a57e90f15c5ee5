# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test lint typecheck pytest install lock bench clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.installed-*
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

# The web UI's front-end packages (package-lock.json), from the npm registry, copied into
# the package's static/vendor dir (gitignored); redone when the lock changes.
VENDOR_DIR := src/opscenter/web/static/vendor
VENDOR := $(VENDOR_DIR)/.installed-$(shell sha256sum package-lock.json | cut -c1-12)

$(VENDOR): package-lock.json package.json
	@command -v npm >/dev/null || { echo "npm is needed for the web UI's assets (apt-get install npm)" >&2; exit 1; }
	npm ci --omit=dev --no-audit --no-fund --loglevel=error
	@rm -rf $(VENDOR_DIR) && mkdir -p $(VENDOR_DIR)
	cp node_modules/htmx.org/dist/htmx.min.js node_modules/chart.js/dist/chart.umd.min.js \
	   node_modules/@picocss/pico/css/pico.classless.min.css $(VENDOR_DIR)/
	@touch $@

install: $(STAMP) $(VENDOR)

run: install
	$(BIN)/opscenter serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

pytest: install
	@bash scripts/ensure-system.sh
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15

test: lint typecheck pytest

# Re-resolve the pins of pyproject.toml into requirements.lock, in a clean venv.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -e '.[dev]'
	.venv-lock/bin/pip freeze --exclude-editable > requirements.lock
	rm -rf .venv-lock

bench: install
	@bash scripts/ensure-system.sh
	$(BIN)/python bench/backup.py
	$(BIN)/python bench/backup_mysql.py --mb 1000
	$(BIN)/python bench/security_import.py --sqlite
	$(BIN)/python bench/api.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/reports.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
