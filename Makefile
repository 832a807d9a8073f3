# Groundswell: the commands you need. How it works: docs/operations.md.
#
#   make run      start everything in the foreground (Ctrl-C stops it all)
#   make up       start everything in the background; make stop stops it
#   make test     start (or reuse) everything, run the tests, stop what it started
#
# Variables: PYTEST_ARGS="-k welcome -x" make test, BENCH_ARGS=..., GROUNDSWELL_STATE_DIR (default .run).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION ?= 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
# stop/status work without the virtualenv too: the launcher only needs the standard library for them.
PY_ANY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
LAUNCHER := $(PY) -m deploy.local.launcher
STATE := $(or $(GROUNDSWELL_STATE_DIR),.run)
PYTEST_ARGS ?= -ra
HELM_TOOLS := $(or $(GROUNDSWELL_CACHE),$(STATE)/cache)/helm-tools
BENCH_ARGS ?=

export UV_PYTHON_DOWNLOADS ?= never

.PHONY: help install run up infra stop down status organiser roll backup restore test lint bench demo helm-tools

help:
	@echo "make install   bootstrap: uv, system packages (postgresql nginx-light chromium java maven prometheus: promtool checks the alert rules), .venv"
	@echo "make run       run everything in the foreground; Ctrl-C stops it"
	@echo "make backup    an encrypted backup of every database and Kafka's topics (docs/operations.md, Backups)"
	@echo "make restore BACKUP=dir   bring the stopped system back from a backup"
	@echo "make roll      upgrade without downtime: expand migrations, restart every instance one at a time (docs/operations.md)"
	@echo "make up        start everything in the background (reuses what runs); prints the addresses"
	@echo "make infra     start only Kafka, PostgreSQL and the SMTP catcher"
	@echo "make stop      stop everything the launcher started (also: make down)"
	@echo "make status    what runs"
	@echo "make organiser EMAIL=you@example.org [SCOPE=network] [NAME=...]   the first organiser, on the running stack"
	@echo "make test      start or reuse the system, run pytest \$$PYTEST_ARGS, stop what test started"
	@echo "make lint      ruff and mypy"
	@echo "make helm-tools  build helm and the manifest validator into \$$(STATE)/cache/helm-tools (deploy/helm; docs/scaling.md)"
	@echo "make bench     run the benchmarks on a stack of their own, ports +5000 (bench/run.py \$$BENCH_ARGS; docs/benchmarks.md)"
	@echo "make demo      load a sample network into the running system"

install:
	@if ! command -v uv >/dev/null 2>&1 && ! $(PYTHON) -m uv --version >/dev/null 2>&1; then \
	  echo "installing uv $(UV_VERSION) with $(PYTHON) -m pip"; \
	  $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"; \
	fi
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || missing="$$missing nginx-light"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y --no-install-recommends $$missing </dev/null \
	      || { apt-get update </dev/null && apt-get install -y --no-install-recommends $$missing </dev/null; }; \
	  else \
	    echo "Missing system packages:$$missing. Install them with: sudo apt-get install -y$$missing" >&2; \
	    exit 1; \
	  fi; \
	fi
	@if command -v uv >/dev/null 2>&1; then uv=uv; else uv="$(PYTHON) -m uv"; fi; \
	$$uv sync --frozen --python $(PYTHON) --all-groups --quiet

run: install
	@$(LAUNCHER) run

up: install
	@$(LAUNCHER) up

infra: install
	@$(LAUNCHER) infra

stop down:
	@$(PY_ANY) -m deploy.local.launcher stop

status:
	@$(PY_ANY) -m deploy.local.launcher status || true

# The first organiser (or any other) on whichever stack `make run`/`make up` started here (same
# GROUNDSWELL_STATE_DIR and GROUNDSWELL_PORT_OFFSET): prints the TOTP secret and a one-time link.
backup: install
	@$(PY) -m deploy.local.backup create

restore: install
	@test -n "$(BACKUP)" || { echo 'usage: make restore BACKUP=.run/backups/<time>  (stop the services first: make stop)' >&2; exit 2; }
	@$(PY) -m deploy.local.backup restore "$(BACKUP)"

# Upgrade without downtime (docs/operations.md): after `git pull`, expand migrations, then every instance of every
# running service restarted one at a time behind the gateway. ROLL="membership events" limits it.
roll: install
	@$(LAUNCHER) roll $(ROLL)

organiser: install
	@test -n "$(EMAIL)" || { echo 'usage: make organiser EMAIL=you@example.org [SCOPE=network|region|group|subteam SCOPE_ID=...] [NAME="..."]' >&2; exit 2; }
	@$(LAUNCHER) organiser --email="$(EMAIL)" --scope="$(or $(SCOPE),network)" \
	  $(if $(NAME),--name="$(NAME)") $(if $(SCOPE_ID),--scope-id="$(SCOPE_ID)")

# `make test` reuses whatever already runs; what it had to start itself it stops afterwards
# (the names are in $(STATE)/test-started.txt). pytest's exit code is make's and is also kept in
# $(STATE)/pytest.rc for .ci/run.
# The suite's notifications hold their claimed deliveries for 6 s, not 30 (shared/config.py): the tests that kill
# a sender mid-send wait for that lease to run out. Set it in the environment to test with another.
test: export DELIVERY_LEASE_SECONDS ?= 6
# Membership looks for overdue data downloads every 2 s, not 30 (shared/config.py): the test of a download sent
# without every part waits for that pass.
test: export MEMBER_DATA_CHECK_SECONDS ?= 2
test: install
	@mkdir -p $(STATE); rm -f $(STATE)/pytest.rc $(STATE)/test-started.txt
	@# helm and the manifest validator build (minutes from cold, once) while the stack starts and the suite runs;
	@# tests/infra/test_helm_chart.py waits for it. Its output: $(STATE)/helm-tools.log.
	@nohup bash deploy/helm/tools/build.sh $(HELM_TOOLS) > $(STATE)/helm-tools.log 2>&1 </dev/null &
	@if [ "$${GROUNDSWELL_TEST_INFRA:-launcher}" = launcher ]; then \
	  $(LAUNCHER) up --started-file $(STATE)/test-started.txt; \
	else echo "make test: GROUNDSWELL_TEST_INFRA=$$GROUNDSWELL_TEST_INFRA: the test fixtures bring the system up"; fi
	@set +e; \
	cleanup() { \
	  if [ -s $(STATE)/test-started.txt ]; then \
	    echo "make test: stopping what it started: $$(tr '\n' ' ' < $(STATE)/test-started.txt)"; \
	    $(LAUNCHER) stop --from-file $(STATE)/test-started.txt; \
	  fi; \
	}; \
	trap cleanup EXIT; trap 'exit 130' INT TERM; \
	$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	echo $$rc > $(STATE)/pytest.rc; \
	exit $$rc

# helm (pinned, from the Go module proxy) and deploy/helm/tools/validate; `make test` builds them in the background.
helm-tools:
	@bash deploy/helm/tools/build.sh $(HELM_TOOLS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared services deploy

bench: install
	@test -f bench/run.py || { echo "bench/run.py does not exist yet" >&2; exit 1; }
	$(PY) bench/run.py $(BENCH_ARGS)

demo: install
	$(PY) -m deploy.local.demo
