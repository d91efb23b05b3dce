# crmgate — the two commands a newcomer needs are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install chromium serve test lint typecheck check lock clean coverage docs bench

install: $(STAMP)

# Install exactly what the lock pins (hash-checked), then crmgate itself in editable mode.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

serve: install
	$(VENV)/bin/crmgate migrate
	$(VENV)/bin/crmgate serve --demo --host $(HOST) --port $(PORT)

# Every test, on as many workers as the machine has cores (pytest-xdist; PYTEST_ARGS="-n 0" runs
# them in one process, e.g. with -x or a debugger).
test: install chromium
	$(PY) -m pytest -n auto --dist worksteal $(PYTEST_ARGS)

# The portal's browser tests drive Debian's chromium (Playwright downloads no browser here).
chromium:
	@command -v chromium >/dev/null || \
		{ apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } || \
		{ echo "make test: needs chromium; as root: apt-get install -y chromium"; exit 1; }

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

check: lint typecheck test

coverage: install
	$(VENV)/bin/crmgate contract-coverage

# The gateway benchmark (bench/run.py, docs/performance.md): nginx and wrk are Debian packages,
# installed when missing; py-spy (the profile) is a pinned dev dependency. BENCH_ARGS=--write-doc
# docs/performance.md also replaces the table there.
bench: install
	@{ command -v wrk && { command -v nginx || test -x /usr/sbin/nginx; }; } >/dev/null || \
		{ apt-get update -q && apt-get install -y -q nginx-light wrk; } || \
		{ echo "make bench: needs nginx and wrk; as root: apt-get install -y nginx-light wrk"; exit 1; }
	$(PY) bench/run.py --py-spy $(VENV)/bin/py-spy $(BENCH_ARGS)

# Rewrite the tables of docs/platforms.md from the platform descriptors.
docs: install
	$(VENV)/bin/crmgate platforms --write docs/platforms.md

# Re-pin every dependency (needs network access to PyPI). Commit the result.
lock:
	$(PYTHON) -m pip install --quiet uv
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --generate-hashes \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
