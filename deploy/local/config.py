"""Where the local stack keeps its state and which ports it listens on, read once from the environment.

GROUNDSWELL_STATE_DIR moves the state, GROUNDSWELL_PORT_OFFSET shifts every port: together they let a
second, separate stack run beside the usual one. The variables of docs/operations.md override the rest.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("GROUNDSWELL_STATE_DIR") or REPO_ROOT / ".run").absolute()  # psql needs a full path
CACHE_DIR = Path(os.environ.get("GROUNDSWELL_CACHE") or STATE_DIR / "cache")
LOG_DIR = STATE_DIR / "logs"
PID_DIR = STATE_DIR / "pids"
KAFKA_DIR = STATE_DIR / "kafka"
NGINX_DIR = STATE_DIR / "nginx"
MAIL_DIR = STATE_DIR / "mail"
SECRET_KEY_FILE = STATE_DIR / "secret_key"
KAFKA_POM = REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml"
NGINX_TEMPLATE = REPO_ROOT / "deploy" / "nginx" / "gateway.conf.template"

# --------------------------------------------------------------------------------------------------
# Addresses (environment variables of docs/operations.md override the defaults)
# --------------------------------------------------------------------------------------------------
HOST = "127.0.0.1"
# GROUNDSWELL_PORT_OFFSET=1000 shifts every default port (8000 -> 9000 ...): a second, separate stack
# (with its own GROUNDSWELL_STATE_DIR) can then run beside the usual one.
PORT_OFFSET = int(os.environ.get("GROUNDSWELL_PORT_OFFSET") or 0)
GATEWAY_PORT = int(os.environ.get("GATEWAY_PORT") or 8000 + PORT_OFFSET)
# Each service's own port, unshifted: what it listens on in a container (docker-compose, the Helm chart).
BASE_SERVICE_PORTS: dict[str, int] = {"membership": 8001, "events": 8002, "notifications": 8003, "campaigns": 8004}
SERVICE_PORTS: dict[str, int] = {name: port + PORT_OFFSET for name, port in BASE_SERVICE_PORTS.items()}
SERVICES: tuple[str, ...] = tuple(SERVICE_PORTS)
KAFKA_PORT = 9092 + PORT_OFFSET
KAFKA_CONTROLLER_PORT = 9093 + PORT_OFFSET
PG_PORT = 5433 + PORT_OFFSET
SMTP_CATCHER_SMTP_PORT = 1025 + PORT_OFFSET
SMTP_CATCHER_HTTP_PORT = 1080 + PORT_OFFSET
BOUNCE_SMTP_PORT = int(os.environ.get("BOUNCE_SMTP_PORT") or 1026 + PORT_OFFSET)  # notifications' bounce receiver

GATEWAY_URL = f"http://{HOST}:{GATEWAY_PORT}"
# HTTPS at the gateway (docs/operations.md, "HTTPS"): both files set -> it serves TLS on GATEWAY_HTTPS_PORT and the
# plain port redirects there (it still answers /_gateway/healthz and ACME's http-01 challenges).
GATEWAY_TLS_CERT = os.environ.get("GATEWAY_TLS_CERT") or ""
GATEWAY_TLS_KEY = os.environ.get("GATEWAY_TLS_KEY") or ""
GATEWAY_HTTPS_PORT = int(os.environ.get("GATEWAY_HTTPS_PORT") or 8443 + PORT_OFFSET)
GATEWAY_ACME_WEBROOT = os.environ.get("GATEWAY_ACME_WEBROOT") or ""
GATEWAY_TLS = bool(GATEWAY_TLS_CERT and GATEWAY_TLS_KEY)
SMTP_CATCHER_URL = f"http://{HOST}:{SMTP_CATCHER_HTTP_PORT}"
KAFKA_EXTERNAL = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"{HOST}:{KAFKA_PORT}"
POSTGRES_EXTERNAL = bool(os.environ.get("DATABASE_URL"))
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL") or (
    f"https://localhost:{GATEWAY_HTTPS_PORT}" if GATEWAY_TLS else f"http://localhost:{GATEWAY_PORT}"
)
DEFAULT_MAIL_FROM = "Groundswell <hello@groundswell.localhost>"

INFRA = ("postgres", "kafka", "smtp_catcher")
GATEWAY = "gateway"

# How long each part may take to become ready (seconds); GROUNDSWELL_START_TIMEOUT overrides all.
START_TIMEOUTS = {"kafka": 120.0, "postgres": 60.0, "smtp_catcher": 30.0, "gateway": 15.0, "service": 90.0}
STOP_TIMEOUTS = {"kafka": 45.0, "postgres": 30.0, "smtp_catcher": 10.0, "gateway": 10.0, "service": 20.0}

IS_ROOT = os.geteuid() == 0


class LauncherError(RuntimeError):
    """Something is wrong that the person running the launcher can fix; the message says how."""


def say(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


def start_timeout(kind: str, default: float | None = None) -> float:
    override = os.environ.get("GROUNDSWELL_START_TIMEOUT")
    if override:
        return float(override)
    return default if default is not None else START_TIMEOUTS[kind]


def rel(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def required_ports(components: Iterable[str]) -> dict[str, int]:
    """{what: port} for the components about to start, as the refusal to start names them."""
    ports: dict[str, int] = {}
    for component in components:
        if component == "kafka":
            ports["Kafka"] = KAFKA_PORT
            ports["Kafka controller"] = KAFKA_CONTROLLER_PORT
        elif component == "postgres":
            ports["PostgreSQL"] = PG_PORT
        elif component == "smtp_catcher":
            ports["SMTP catcher (SMTP)"] = SMTP_CATCHER_SMTP_PORT
            ports["SMTP catcher (web)"] = SMTP_CATCHER_HTTP_PORT
        elif component == GATEWAY:
            ports["gateway"] = GATEWAY_PORT
            if GATEWAY_TLS:
                ports["gateway (https)"] = GATEWAY_HTTPS_PORT
        elif component in SERVICE_PORTS:
            ports[component] = SERVICE_PORTS[component]
    return ports


def development_flag() -> dict[str, str]:
    """GROUNDSWELL_DEV for the processes the launcher starts: a development stack, where shared/config.py allows
    a weak SECRET_KEY from the environment (the generated one is strong). GROUNDSWELL_DEV=0 turns the check on.
    A development stack also has the route that fails on purpose, for the tests (GROUNDSWELL_TEST_FAILURES=0: not)."""
    dev = os.environ.get("GROUNDSWELL_DEV") or "1"
    return {"GROUNDSWELL_DEV": dev, "GROUNDSWELL_TEST_FAILURES": os.environ.get("GROUNDSWELL_TEST_FAILURES") or dev}


def secret_key() -> str:
    """SECRET_KEY from the environment, else the one generated on the first run (.run/secret_key)."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    if not SECRET_KEY_FILE.exists():
        # Written aside, then linked into place: a reader never finds the file empty (a first `make test`
        # reading it while `make up` writes it), and of two first runs at once exactly one key wins.
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        draft = SECRET_KEY_FILE.with_name(f"secret_key.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
        try:
            with contextlib.suppress(FileExistsError):
                os.link(draft, SECRET_KEY_FILE)
        finally:
            draft.unlink()
    return SECRET_KEY_FILE.read_text().strip()
