"""Runs all of Groundswell on one machine without Docker: Kafka, PostgreSQL, an SMTP catcher, the
four services and an nginx gateway, as ordinary processes whose state lives in `.run/`.

CLI: ``python -m deploy.local.launcher {run,up,down,stop,status,infra}`` (see ``--help``).
Library: tests import this module to start, stop and kill parts of the running system
(``ensure_up``, ``stop_kafka``, ``restart_postgres``, ``kill_service`` ...).

Every process runs in its own session (so a terminal's Ctrl-C reaches only the launcher, which then
stops everything in order) and is recorded in ``.run/pids/<name>.pid`` (the pid) and ``<name>.json``
(command, port, process start time, so a recycled pid is never mistaken for ours). Stopping sends
SIGTERM (SIGINT to PostgreSQL: fast shutdown), waits, then SIGKILLs the whole process group.
Decisions: docs/decisions/0001-local-launcher-without-docker.md; operator guide: docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import errno
import fcntl
import glob
import hashlib
import http.client
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

# --------------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("GROUNDSWELL_STATE_DIR") or REPO_ROOT / ".run").absolute()  # psql needs a full path
CACHE_DIR = Path(os.environ.get("GROUNDSWELL_CACHE") or STATE_DIR / "cache")
LOG_DIR = STATE_DIR / "logs"
PID_DIR = STATE_DIR / "pids"
KAFKA_DIR = STATE_DIR / "kafka"


def _others_can_traverse(path: Path) -> bool:
    """Can an unprivileged user (the `postgres` account) reach `path`? Checks the parts that exist."""
    for part in path.parents:
        if part.exists() and not part.stat().st_mode & 0o001:
            return False
    return True


def _pg_dir() -> Path:
    """Where the private cluster lives: in the state dir, unless the server's unprivileged user could not
    reach it there (a checkout inside a private directory, as `mktemp -d` makes), then in /var/tmp."""
    if os.environ.get("GROUNDSWELL_PG_DIR"):
        return Path(os.environ["GROUNDSWELL_PG_DIR"])
    inside = STATE_DIR / "pg"
    if os.geteuid() != 0 or _others_can_traverse(inside):
        return inside
    digest = hashlib.sha1(str(STATE_DIR.resolve()).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"groundswell-pg-{digest}"


PG_DIR = _pg_dir()
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
SERVICE_PORTS: dict[str, int] = {
    name: port + PORT_OFFSET
    for name, port in {"membership": 8001, "events": 8002, "notifications": 8003, "campaigns": 8004}.items()
}
SERVICES: tuple[str, ...] = tuple(SERVICE_PORTS)
KAFKA_PORT = 9092 + PORT_OFFSET
KAFKA_CONTROLLER_PORT = 9093 + PORT_OFFSET
PG_PORT = 5433 + PORT_OFFSET
SMTP_CATCHER_SMTP_PORT = 1025 + PORT_OFFSET
SMTP_CATCHER_HTTP_PORT = 1080 + PORT_OFFSET

GATEWAY_URL = f"http://{HOST}:{GATEWAY_PORT}"
SMTP_CATCHER_URL = f"http://{HOST}:{SMTP_CATCHER_HTTP_PORT}"
KAFKA_EXTERNAL = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"{HOST}:{KAFKA_PORT}"
POSTGRES_EXTERNAL = bool(os.environ.get("DATABASE_URL"))
PG_USER = "groundswell"
PG_PASSWORD = "groundswell"
PG_SUPERUSER = "postgres"  # bootstrap superuser of the private cluster, reachable only over its socket
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL") or f"http://localhost:{GATEWAY_PORT}"
DEFAULT_MAIL_FROM = "Groundswell <hello@groundswell.localhost>"

INFRA = ("postgres", "kafka", "smtp_catcher")
GATEWAY = "gateway"

# How long each part may take to become ready (seconds); GROUNDSWELL_START_TIMEOUT overrides all.
START_TIMEOUTS = {"kafka": 120.0, "postgres": 60.0, "smtp_catcher": 30.0, "gateway": 15.0, "service": 90.0}
STOP_TIMEOUTS = {"kafka": 45.0, "postgres": 30.0, "smtp_catcher": 10.0, "gateway": 10.0, "service": 20.0}

# --------------------------------------------------------------------------------------------------
# The gateway's routing table: path -> owning service. The one place it is written down.
#   "/x"  routes /x exactly and everything under /x/ ;   "/x/" routes everything under /x/ ;
#   "/"   is the catch-all (home page, anything unrouted: membership renders the 404).
# nginx picks the longest matching prefix, so /api/v2/events beats /api/v2.
# --------------------------------------------------------------------------------------------------
ROUTES: dict[str, str] = {
    "/": "membership",
    # membership: people, consent (preferences, unsubscribe), organiser accounts, OSDI entry point
    "/join": "membership",
    "/members": "membership",
    "/me": "membership",
    "/organisers": "membership",
    "/signin": "membership",
    "/admin": "membership",
    "/preferences": "membership",
    "/unsubscribe": "membership",
    "/api/v2": "membership",
    "/api/v2/people": "membership",
    "/api/v2/tags": "membership",
    "/api/v2/person_signup_helper": "membership",
    "/static/membership/": "membership",
    # events: meetings, conferences, RSVPs, calendars
    "/events": "events",
    "/meetings": "events",
    "/calendar": "events",
    "/api/v2/events": "events",
    "/static/events/": "events",
    # notifications: delivery, digests and their feeds
    "/notifications": "notifications",
    "/feeds": "notifications",
    "/static/notifications/": "notifications",
    # campaigns: asks, actions, the organisers' dashboard
    "/campaigns": "campaigns",
    "/dashboard": "campaigns",
    "/api/v2/petitions": "campaigns",
    "/static/campaigns/": "campaigns",
}
# Besides ROUTES, /_svc/<service>/<path> reaches <path> on that service (health, metrics), and
# /_gateway/healthz answers from nginx itself.


class LauncherError(RuntimeError):
    """Something is wrong that the person running the launcher can fix; the message says how."""


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------
T = TypeVar("T")
_IS_ROOT = os.geteuid() == 0
_lock_depth = threading.local()
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # processes this Python process spawned (to reap)
_tie_children_to_launcher = False  # `run` mode: children get SIGTERM if the launcher dies


def _say(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


def _timeout(kind: str, default: float | None = None) -> float:
    override = os.environ.get("GROUNDSWELL_START_TIMEOUT")
    if override:
        return float(override)
    return default if default is not None else START_TIMEOUTS[kind]


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def log_path(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def log_tail(name: str, lines: int = 30) -> str:
    """The last lines of a component's log, for error messages."""
    path = log_path(name)
    if not path.exists():
        return f"(no log at {path})"
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode("utf-8", "replace")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _run_in_thread(factory: Callable[[], Any]) -> Any:
    """Run a coroutine to completion on a private event loop in a worker thread.

    The library is synchronous but is called from async tests whose loop is already running, where
    asyncio.run() would refuse; a worker thread has no loop of its own, so this works everywhere.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(factory())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="launcher-async", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


@contextlib.contextmanager
def _launcher_lock() -> Iterator[None]:
    """Serialise launchers (two `make test` at once); re-entrant within one process."""
    depth = getattr(_lock_depth, "n", 0)
    if depth:
        _lock_depth.n = depth + 1
        try:
            yield
        finally:
            _lock_depth.n -= 1
        return
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "launcher.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say("another launcher is starting or stopping Groundswell; waiting for it ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        _lock_depth.n = 1
        try:
            yield
        finally:
            _lock_depth.n = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


def secret_key() -> str:
    """SECRET_KEY from the environment, else the one generated on the first run (.run/secret_key)."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    if not SECRET_KEY_FILE.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(SECRET_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
    return SECRET_KEY_FILE.read_text().strip()


def database_url(service: str) -> str:
    """The service's own database: on the private cluster, or on the DATABASE_URL server if set."""
    name = f"groundswell_{service}"
    external = os.environ.get("DATABASE_URL")
    if external:
        parts = urlsplit(external)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    return f"postgresql+asyncpg://{PG_USER}:{PG_PASSWORD}@{HOST}:{PG_PORT}/{name}"


def _asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


# --------------------------------------------------------------------------------------------------
# Processes: start, record, find, stop
# --------------------------------------------------------------------------------------------------
@dataclass
class ProcessRecord:
    """What the launcher remembers about a process it started (the <name>.json next to the pid file)."""

    name: str
    pid: int
    kind: str  # kafka | postgres | smtp_catcher | gateway | service
    command: list[str]
    port: int | None = None
    service: str = ""
    instance: str = ""
    started_at: float = field(default_factory=time.time)
    proc_start: int = 0  # field 22 of /proc/<pid>/stat: tells our process from a recycled pid
    log: str = ""

    @property
    def pid_file(self) -> Path:
        return PID_DIR / f"{self.name}.pid"

    @property
    def meta_file(self) -> Path:
        return PID_DIR / f"{self.name}.json"

    def save(self) -> None:
        PID_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(self.meta_file)
        self.pid_file.write_text(f"{self.pid}\n")

    def forget(self) -> None:
        """Remove the pid files, unless they meanwhile describe a newer process of the same name."""
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            if int(json.loads(self.meta_file.read_text())["pid"]) != self.pid:
                return
        for path in (self.pid_file, self.meta_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.rsplit(")", 1)[1].split()


def _proc_start(pid: int) -> int:
    stat = _proc_stat(pid)
    return int(stat[19]) if stat else 0


def _reap(pid: int) -> None:
    popen = _CHILDREN.get(pid)
    if popen is not None:
        popen.poll()
    else:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _pid_alive(pid: int, proc_start: int = 0) -> bool:
    stat = _proc_stat(pid)
    if stat is None:
        return False
    if stat[0] in ("Z", "X"):
        _reap(pid)
        return False
    return not (proc_start and int(stat[19]) != proc_start)


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process below pid; PostgreSQL's children leave its process group."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat:
                children.setdefault(int(stat[1]), []).append(int(entry))
    found: list[tuple[int, int]] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append((child, _proc_start(child)))
        todo.extend(children.get(child, []))
    return found


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and stat[0] not in ("Z", "X") and int(stat[2]) == pgid:
                members.append(int(entry))
    return members


def read_record(name: str) -> ProcessRecord | None:
    """The record of a process we started, if it is still running; stale records are removed."""
    meta = PID_DIR / f"{name}.json"
    try:
        data = json.loads(meta.read_text())
        record = ProcessRecord(**data)
    except FileNotFoundError:
        pid_file = PID_DIR / f"{name}.pid"
        if pid_file.exists():  # a bare pid file (written by hand or an old launcher)
            with contextlib.suppress(ValueError):
                pid = int(pid_file.read_text().split()[0])
                if _pid_alive(pid):
                    return ProcessRecord(name=name, pid=pid, kind="unknown", command=[])
            pid_file.unlink(missing_ok=True)
        return None
    except (ValueError, TypeError):
        meta.unlink(missing_ok=True)
        return None
    if _pid_alive(record.pid, record.proc_start):
        return record
    # It died: leave no stray group members behind (e.g. postgres backends after a SIGKILL).
    _kill_group_leftovers(record.pid, record.proc_start)
    record.forget()
    return None


def recorded_names() -> list[str]:
    if not PID_DIR.exists():
        return []
    return sorted({p.stem for p in PID_DIR.glob("*.json")} | {p.stem for p in PID_DIR.glob("*.pid")})


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedProcess:
    """A handle on a process the launcher started (in this or an earlier run), Popen-like."""

    def __init__(self, record: ProcessRecord, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.record = record
        self.popen = popen or _CHILDREN.get(record.pid)
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.record.pid

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def port(self) -> int | None:
        return self.record.port

    @property
    def url(self) -> str | None:
        return f"http://{HOST}:{self.record.port}" if self.record.port else None

    def poll(self) -> int | None:
        if self.popen is not None:
            self.returncode = self.popen.poll()
            return self.returncode
        if _pid_alive(self.record.pid, self.record.proc_start):
            return None
        self.returncode = self.returncode if self.returncode is not None else -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.record.command, timeout or 0)
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.record.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.record.pid, signal.SIGKILL)

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} port={self.port}>"


def _rotate_log(path: Path, limit: int = 50 * 1024 * 1024) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > limit:
            path.replace(path.with_suffix(path.suffix + ".1"))


def _spawn(
    name: str,
    kind: str,
    command: list[str],
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    service: str = "",
    instance: str = "",
    as_user: str | None = None,
) -> ManagedProcess:
    """Start a process in its own session, output appended to .run/logs/<name>.log, and record it."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_file = log_path(name)
    _rotate_log(log_file)
    argv = list(command)
    if as_user:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--init-groups", "--", *argv]
    with log_file.open("ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} launcher starts: {' '.join(argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_set_pdeathsig if _tie_children_to_launcher else None,  # noqa: PLW1509
        )
    _CHILDREN[popen.pid] = popen
    # setpriv and the JVM exec in place, so the pid we got is the server's own pid.
    record = ProcessRecord(
        name=name,
        pid=popen.pid,
        kind=kind,
        command=argv,
        port=port,
        service=service,
        instance=instance,
        proc_start=_proc_start(popen.pid),
        log=str(log_file),
    )
    record.save()
    return ManagedProcess(record, popen)


def _kill_group_leftovers(pgid: int, proc_start: int = 0) -> None:
    """SIGKILL what is left of a dead leader's process group (e.g. PostgreSQL backends after a crash)."""
    stat = _proc_stat(pgid)
    if stat is not None and stat[0] not in ("Z", "X") and proc_start and int(stat[19]) != proc_start:
        return  # the pid now belongs to an unrelated process, so no group of ours can still use it
    for pid in _group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _stop_signal(kind: str) -> signal.Signals:
    # PostgreSQL: SIGTERM is "smart" shutdown (waits for every client to leave); SIGINT is "fast".
    return signal.SIGINT if kind == "postgres" else signal.SIGTERM


def _signal_record(record: ProcessRecord, sig: int) -> None:
    try:
        if record.kind == "postgres" and sig != signal.SIGKILL:
            os.kill(record.pid, sig)  # the postmaster tells its own children
        else:
            os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(record.pid, record.proc_start):
            return True
        time.sleep(0.05)
    return not _pid_alive(record.pid, record.proc_start)


def stop_records(records: Iterable[ProcessRecord], sig: int | None = None, timeout: float | None = None) -> None:
    """Stop several processes at once: signal all, wait, SIGKILL the groups of any that stay."""
    records = list(records)
    family = {record.pid: _descendants(record.pid) for record in records}
    for record in records:
        _signal_record(record, sig if sig is not None else _stop_signal(record.kind))
    for record in records:
        wait = timeout if timeout is not None else STOP_TIMEOUTS.get(record.kind, 15.0)
        if not _wait_gone(record, wait):
            _say(f"{record.name} (pid {record.pid}) did not stop within {wait:.0f}s; killing it")
            _signal_record(record, signal.SIGKILL)
            _wait_gone(record, 10.0)
        _kill_group_leftovers(record.pid, record.proc_start)
        _kill_orphans(family[record.pid])
        _reap(record.pid)
        record.forget()


def _kill_orphans(processes: list[tuple[int, int]], grace: float = 5.0) -> None:
    """Give a dead server's children a moment to exit by themselves, then SIGKILL the rest."""
    deadline = time.monotonic() + grace
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [(pid, start) for pid, start in alive if _pid_alive(pid, start)]
        if alive:
            time.sleep(0.05)
    for pid, start in alive:
        if _pid_alive(pid, start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def stop_process(name: str, sig: int | None = None, timeout: float | None = None) -> bool:
    """Stop one recorded process by name; False if it was not running."""
    record = read_record(name)
    if record is None:
        return False
    stop_records([record], sig, timeout)
    return True


# --------------------------------------------------------------------------------------------------
# Waiting for readiness
# --------------------------------------------------------------------------------------------------
def http_status(url: str, timeout: float = 2.0) -> int | None:
    """GET url (no proxies, no redirects followed); the status code or None if nothing answered."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_http(url: str, timeout: float, *, process: ManagedProcess | None = None) -> bool:
    """Poll url until it answers 200 (True) or timeout passes (False); stop early if process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if http_status(url, timeout=min(2.0, max(0.2, deadline - time.monotonic()))) == 200:
            return True
        if process is not None and process.poll() is not None:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _wait_until(check: Callable[[], bool], timeout: float, process: ManagedProcess | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if process is not None and process.poll() is not None:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def _not_ready(name: str, process: ManagedProcess | None, timeout: float, what: str) -> LauncherError:
    died = process is not None and process.poll() is not None
    state = (
        f"exited with code {process.returncode}" if died and process else f"did not become ready within {timeout:.0f}s"
    )
    return LauncherError(
        f"{name} {state} ({what}).\nLast lines of {_rel(log_path(name))}:\n{log_tail(name)}\n"
        f"Fix the cause shown above, then run the launcher again (`make up`); `make stop` cleans up."
    )


# --------------------------------------------------------------------------------------------------
# Ports and tools: checked before anything starts
# --------------------------------------------------------------------------------------------------
def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something listens on host:port (bind test, as a server starting there would do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _port_owner(port: int) -> str:
    """'pid 123 (nginx)' for a listening TCP port, when /proc lets us see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                    inodes.add(cols[9])
    if not inodes:
        return ""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    return f"pid {pid} ({comm})"
    return ""


def check_ports(ports: Mapping[str, int], host: str = HOST) -> None:
    """Raise LauncherError naming every port in `ports` ({what: port}) that another program holds."""
    taken = [(what, port) for what, port in ports.items() if port_in_use(port, host)]
    if not taken:
        return
    lines = []
    for what, port in taken:
        owner = _port_owner(port)
        lines.append(f"  {host}:{port} ({what}) is in use{' by ' + owner if owner else ''}")
    raise LauncherError(
        "Cannot start Groundswell: these ports are taken by programs this launcher did not start:\n"
        + "\n".join(lines)
        + "\nStop those programs (see `ss -ltnp`), or, if they are left over from an earlier Groundswell run "
        "whose state was lost, stop them by pid. Nothing was started."
    )


def _required_ports(components: Iterable[str]) -> dict[str, int]:
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
        elif component in SERVICE_PORTS:
            ports[component] = SERVICE_PORTS[component]
    return ports


def _apt_install(package: str, why: str) -> None:
    if not _IS_ROOT or not shutil.which("apt-get"):
        raise LauncherError(f"{why} is missing. Install it with: sudo apt-get install -y {package}")
    _say(f"{why} is missing; installing the Debian package {package} (apt-get) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, stdin=subprocess.DEVNULL)
        if subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode != 0:
            raise LauncherError(f"Could not install {package} with apt-get; install it by hand and try again.")


def pg_bin_dir() -> Path:
    """The PostgreSQL server binaries: $PG_BIN, else the newest /usr/lib/postgresql/<v>/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres") or shutil.which("initdb")
    return Path(on_path).parent if on_path else Path("/usr/lib/postgresql/15/bin")


def _check_java() -> None:
    java = shutil.which("java")
    if not java:
        raise LauncherError(
            "Java is missing; Kafka needs Java 17 or newer. Install it with: "
            "sudo apt-get install -y openjdk-17-jre-headless"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match:
        major = int(match.group(1)) if match.group(1) != "1" else int(match.group(2) or 0)
        if major < 17:
            raise LauncherError(f"Kafka 4 needs Java 17 or newer; `java -version` says {major}. Install Java 17.")


def preflight(components: Iterable[str]) -> None:
    """Check tools and ports for the components about to start; raise LauncherError before anything starts."""
    components = list(components)
    if "kafka" in components:
        _check_java()
        if not _kafka_libs_ready() and not shutil.which("mvn"):
            raise LauncherError(
                "Maven (mvn) is missing; the launcher uses it once to fetch Kafka from Maven Central. "
                "Install it with: sudo apt-get install -y maven"
            )
    if "postgres" in components:
        if not (pg_bin_dir() / "postgres").exists() and not os.environ.get("PG_BIN"):
            _apt_install("postgresql", "PostgreSQL (server binaries in /usr/lib/postgresql/<version>/bin)")
        if not (pg_bin_dir() / "postgres").exists():
            raise LauncherError(f"PostgreSQL binaries not found in {pg_bin_dir()}; set PG_BIN to their directory.")
        if _IS_ROOT:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise LauncherError(
                    "PostgreSQL refuses to run as root and there is no `postgres` user to run it as. "
                    "Create one (sudo adduser --system --group postgres) or run the launcher as a normal user."
                ) from exc
    if GATEWAY in components and not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        _apt_install("nginx-light", "nginx (the gateway)")
    check_ports(_required_ports(components))


# --------------------------------------------------------------------------------------------------
# Kafka (single KRaft node, jars from Maven Central)
# --------------------------------------------------------------------------------------------------
def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", KAFKA_POM.read_text())
    if not match:
        raise LauncherError(f"{KAFKA_POM} does not declare <kafka.version>")
    return match.group(1).strip()


def kafka_libs_dir() -> Path:
    return CACHE_DIR / f"kafka-{kafka_version()}" / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()[:16]


def _kafka_libs_ready() -> bool:
    marker = kafka_libs_dir() / ".resolved"
    return marker.exists() and marker.read_text().strip() == _pom_digest()


def ensure_kafka_libs() -> Path:
    """Copy Kafka and its dependencies from Maven Central into the cache once (per pom.xml content)."""
    libs = kafka_libs_dir()
    if _kafka_libs_ready():
        return libs
    if not shutil.which("mvn"):
        raise LauncherError("Maven (mvn) is missing; install it with: sudo apt-get install -y maven")
    _say(f"fetching Apache Kafka {kafka_version()} with Maven (first run only; about a minute) ...")
    staging = libs.with_name(f"libs.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with log_path("maven").open("ab") as out:
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if result.returncode != 0 or not list(staging.glob("kafka_*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise LauncherError(
            "Maven could not fetch Kafka (is Maven Central reachable? a proxy in ~/.m2/settings.xml?).\n"
            f"Last lines of {_rel(log_path('maven'))}:\n{log_tail('maven')}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.replace(libs)
    (libs / ".resolved").write_text(_pom_digest() + "\n")
    return libs


def kafka_classpath() -> str:
    """The Java classpath of the broker and kafka-tools (ProducerPerformance, EndToEndLatency ...)."""
    return f"{ensure_kafka_libs()}/*"


def kafka_tool_command(main_class: str, *args: str, heap: str = "256m") -> list[str]:
    """A command running a Kafka tool class, e.g. org.apache.kafka.tools.ProducerPerformance."""
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    (KAFKA_DIR / "log4j2-tools.xml").write_text(LOG4J2_TOOLS)
    return [
        "java", f"-Xmx{heap}", f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2-tools.xml'}",
        "-cp", kafka_classpath(), main_class, *args,
    ]  # fmt: skip


LOG4J2_BROKER = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by deploy/local/launcher.py: the broker logs to stdout, which goes to .run/logs/kafka.log -->
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d{yyyy-MM-dd HH:mm:ss,SSS}] %-5p %m (%c{1.})%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/></Root>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="kafka.log" level="WARN"/>
    <Logger name="org.apache.kafka.raft" level="WARN"/>
    <Logger name="org.apache.kafka.image" level="WARN"/>
    <Logger name="org.apache.kafka.metadata" level="WARN"/>
    <Logger name="kafka.server.metadata" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
  </Loggers>
</Configuration>
"""

LOG4J2_TOOLS = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="%-5p %m%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
"""


def kafka_server_properties() -> str:
    data = KAFKA_DIR / "data"
    return f"""# Written by deploy/local/launcher.py on every start: a single-node KRaft cluster for development.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={HOST}:{KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://{HOST}:{KAFKA_PORT}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
metadata.log.dir={data}
# Topics are created explicitly (python -m shared.topics create), never by a typo.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=-1
log.segment.bytes=104857600
log.cleaner.dedupe.buffer.size=16777216
"""


def _write_kafka_config() -> None:
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    (KAFKA_DIR / "server.properties").write_text(kafka_server_properties())
    (KAFKA_DIR / "log4j2.xml").write_text(LOG4J2_BROKER)
    (KAFKA_DIR / "log4j2-tools.xml").write_text(LOG4J2_TOOLS)


def _kafka_cluster_id() -> str:
    path = KAFKA_DIR / "cluster-id"
    if not path.exists():
        path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") + "\n")
    return path.read_text().strip()


def _format_kafka_storage(libs: Path) -> None:
    if (KAFKA_DIR / "data" / "meta.properties").exists():
        return
    _say("formatting Kafka storage (first run only) ...")
    result = subprocess.run(
        ["java", "-Xmx256m", f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2-tools.xml'}",
         "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format", "--standalone",
         "--cluster-id", _kafka_cluster_id(), "--config", str(KAFKA_DIR / "server.properties")],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        raise LauncherError(f"Formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")


def kafka_command(libs: Path) -> list[str]:
    return [
        "java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.xml'}", f"-Dkafka.logs.dir={LOG_DIR}",
        "-cp", f"{libs}/*", "kafka.Kafka", str(KAFKA_DIR / "server.properties"),
    ]  # fmt: skip


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library logger for a moment (aiokafka logs every refused connection while we poll)."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def _kafka_metadata_ok(bootstrap: str, timeout: float) -> bool:
    with _quiet_logger("aiokafka"):
        return await _poll_kafka_metadata(bootstrap, timeout)


async def _poll_kafka_metadata(bootstrap: str, timeout: float) -> bool:
    from aiokafka import AIOKafkaClient  # type: ignore[attr-defined]

    deadline = time.monotonic() + timeout
    while True:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, metadata_max_age_ms=1000)
        try:
            await asyncio.wait_for(client.bootstrap(), max(1.0, min(6.0, deadline - time.monotonic())))
            metadata = await asyncio.wait_for(client.fetch_all_metadata(), 6.0)
            if metadata.brokers():
                return True
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        finally:
            with contextlib.suppress(Exception):
                await client.close()
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.5)


def kafka_ready(timeout: float = 5.0) -> bool:
    """True once the broker at KAFKA_BOOTSTRAP answers a metadata request (polls up to `timeout`)."""
    return bool(_run_in_thread(lambda: _kafka_metadata_ok(KAFKA_BOOTSTRAP, timeout)))


def _prepare_kafka() -> Path:
    libs = ensure_kafka_libs()
    _write_kafka_config()
    (KAFKA_DIR / "classpath").write_text(f"{libs}/*\n")
    _format_kafka_storage(libs)
    return libs


def _spawn_kafka() -> ManagedProcess:
    libs = _prepare_kafka()
    return _spawn("kafka", "kafka", kafka_command(libs), port=KAFKA_PORT)


def _wait_kafka(process: ManagedProcess | None, timeout: float | None = None) -> None:
    timeout = timeout or _timeout("kafka")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        if kafka_ready(min(5.0, max(0.5, deadline - time.monotonic()))):
            return
    raise _not_ready("kafka", process, timeout, f"no metadata answer from {KAFKA_BOOTSTRAP}")


def start_kafka(timeout: float | None = None) -> ManagedProcess | None:
    """Start the local broker (if not running) and wait until it answers metadata requests."""
    if KAFKA_EXTERNAL:
        raise LauncherError(f"KAFKA_BOOTSTRAP_SERVERS={KAFKA_BOOTSTRAP} is set: Kafka is not the launcher's to start.")
    with _launcher_lock():
        record = read_record("kafka")
        if record is not None:
            process = ManagedProcess(record)
            _wait_kafka(process, timeout)
            return process
        preflight(["kafka"])
        process = _spawn_kafka()
        try:
            _wait_kafka(process, timeout)
        except BaseException:
            stop_process("kafka")
            raise
        return process


def stop_kafka(sig: int = signal.SIGTERM) -> bool:
    """Stop the local broker (SIGTERM: controlled shutdown; pass SIGKILL to crash it)."""
    return stop_process("kafka", sig)


# --------------------------------------------------------------------------------------------------
# PostgreSQL (private cluster, run as the `postgres` user when the launcher is root)
# --------------------------------------------------------------------------------------------------
def _pg_user() -> str | None:
    return "postgres" if _IS_ROOT else None


def pg_data_dir() -> Path:
    return PG_DIR / "data"


def pg_socket_dir() -> Path:
    sock = PG_DIR / "sock"
    if len(str(sock / f".s.PGSQL.{PG_PORT}")) > 100:  # unix socket paths are limited to 107 bytes
        digest = hashlib.sha1(str(PG_DIR).encode()).hexdigest()[:10]
        sock = Path(f"/tmp/groundswell-pg-{digest}")
    return sock


def _as_pg_user(command: list[str]) -> list[str]:
    user = _pg_user()
    if user:
        return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *command]
    return command


def postgres_conf() -> str:
    return f"""# Written by deploy/local/launcher.py on every start (included from postgresql.conf).
listen_addresses = '{HOST}'
port = {PG_PORT}
unix_socket_directories = '{pg_socket_dir()}'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 128MB
effective_cache_size = 512MB
work_mem = 4MB
maintenance_work_mem = 64MB
wal_buffers = 4MB
min_wal_size = 80MB
max_wal_size = 1GB
checkpoint_completion_target = 0.9
random_page_cost = 1.1
# Durability stays on: fault-injection tests restart PostgreSQL and expect committed rows back.
fsync = on
synchronous_commit = on
password_encryption = scram-sha-256
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1000
log_timezone = 'UTC'
timezone = 'UTC'
"""


PG_HBA = """# Written by deploy/local/launcher.py. The unix socket lives in a private directory (0700).
local   all   all                   trust
host    all   all   127.0.0.1/32    scram-sha-256
host    all   all   ::1/128         scram-sha-256
"""


def _chown_pg(path: Path) -> None:
    user = _pg_user()
    if user:
        entry = pwd.getpwnam(user)
        shutil.chown(path, entry.pw_uid, entry.pw_gid)


def _prepare_postgres() -> None:
    bins = pg_bin_dir()
    PG_DIR.mkdir(parents=True, exist_ok=True)
    PG_DIR.chmod(0o700)
    _chown_pg(PG_DIR)
    sock = pg_socket_dir()
    sock.mkdir(parents=True, exist_ok=True)
    sock.chmod(0o700)
    _chown_pg(sock)
    if _pg_user():
        probe = subprocess.run(_as_pg_user(["test", "-w", str(PG_DIR)]), capture_output=True)
        if probe.returncode != 0:
            raise LauncherError(
                f"The postgres user cannot reach {PG_DIR} (a parent directory is not traversable). "
                "Either `chmod o+x` the parent directories, or put the state elsewhere: "
                "GROUNDSWELL_STATE_DIR=/var/tmp/groundswell make up"
            )
    data = pg_data_dir()
    if not (data / "PG_VERSION").exists():
        _say("creating the private PostgreSQL cluster (first run only) ...")
        shutil.rmtree(data, ignore_errors=True)
        result = subprocess.run(
            _as_pg_user([str(bins / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "--auth-local=trust",
                         "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]),
            capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/",
        )  # fmt: skip
        if result.returncode != 0:
            raise LauncherError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'groundswell.conf'\n")
    (data / "groundswell.conf").write_text(postgres_conf())
    (data / "pg_hba.conf").write_text(PG_HBA)
    for name in ("groundswell.conf", "pg_hba.conf"):
        _chown_pg(data / name)


def _spawn_postgres() -> ManagedProcess:
    _prepare_postgres()
    return _spawn(
        "postgres", "postgres", [str(pg_bin_dir() / "postgres"), "-D", str(pg_data_dir())],
        port=PG_PORT, as_user=_pg_user(),
    )  # fmt: skip


def postgres_ready() -> bool:
    result = subprocess.run(
        [str(pg_bin_dir() / "pg_isready"), "-q", "-h", HOST, "-p", str(PG_PORT), "-t", "2"],
        stdin=subprocess.DEVNULL, capture_output=True,
    )  # fmt: skip
    return result.returncode == 0


def _psql(sql: str) -> str:
    result = subprocess.run(
        [str(pg_bin_dir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(pg_socket_dir()),
         "-p", str(PG_PORT), "-U", PG_SUPERUSER, "-d", "postgres"],
        input=sql, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise LauncherError(f"psql failed: {result.stderr.strip()}\nSQL: {sql}")
    return result.stdout


def _ensure_databases_local() -> None:
    """The groundswell role (password groundswell) and one database per service, created if missing."""
    statements = [
        f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') THEN
    CREATE ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{PG_PASSWORD}';
  END IF;
END $$;"""
    ]
    for service in SERVICES:
        db = f"groundswell_{service}"
        statements.append(
            f"SELECT 'CREATE DATABASE {db} OWNER {PG_USER}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec"
        )
    _psql("\n".join(statements) + "\n")


async def _ensure_databases_external() -> None:
    import asyncpg  # type: ignore[import-untyped]

    server = os.environ["DATABASE_URL"]
    parts = urlsplit(server)
    maintenance = urlunsplit((parts.scheme, parts.netloc, parts.path or "/postgres", parts.query, ""))
    conn = await asyncpg.connect(_asyncpg_dsn(maintenance), timeout=10)
    try:
        for service in SERVICES:
            db = f"groundswell_{service}"
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
                await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()


def ensure_databases() -> None:
    if POSTGRES_EXTERNAL:
        try:
            _run_in_thread(_ensure_databases_external)
        except Exception as exc:  # noqa: BLE001 - an operator-managed server may not let us create databases
            _say(f"could not check/create the groundswell_<service> databases on DATABASE_URL's server: {exc}")
        return
    _ensure_databases_local()


def _wait_postgres(process: ManagedProcess | None, timeout: float | None = None) -> None:
    timeout = timeout or _timeout("postgres")
    if not _wait_until(postgres_ready, timeout, process):
        raise _not_ready("postgres", process, timeout, f"pg_isready on {HOST}:{PG_PORT}")


def start_postgres(timeout: float | None = None) -> ManagedProcess | None:
    """Start the private PostgreSQL cluster (if not running), wait for it, create missing databases."""
    if POSTGRES_EXTERNAL:
        raise LauncherError("DATABASE_URL is set: PostgreSQL is not the launcher's to start.")
    with _launcher_lock():
        record = read_record("postgres")
        if record is not None:
            process = ManagedProcess(record)
            _wait_postgres(process, timeout)
            return process
        preflight(["postgres"])
        process = _spawn_postgres()
        try:
            _wait_postgres(process, timeout)
            ensure_databases()
        except BaseException:
            stop_process("postgres")
            raise
        return process


def stop_postgres(sig: int = signal.SIGINT) -> bool:
    """Stop the private cluster (SIGINT: fast shutdown; SIGKILL to crash it)."""
    return stop_process("postgres", sig)


def restart_postgres(timeout: float | None = None) -> ManagedProcess | None:
    stop_postgres()
    return start_postgres(timeout)


# --------------------------------------------------------------------------------------------------
# SMTP catcher
# --------------------------------------------------------------------------------------------------
def _spawn_smtp_catcher() -> ManagedProcess:
    command = [
        sys.executable, "-m", "deploy.local.smtp_catcher", "--host", HOST,
        "--smtp-port", str(SMTP_CATCHER_SMTP_PORT), "--http-port", str(SMTP_CATCHER_HTTP_PORT),
        "--mail-dir", str(MAIL_DIR),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return _spawn("smtp_catcher", "smtp_catcher", command, env=env, port=SMTP_CATCHER_HTTP_PORT)


def smtp_catcher_ready(timeout: float = 0.0, process: ManagedProcess | None = None) -> bool:
    ok = wait_http(f"{SMTP_CATCHER_URL}/healthz", timeout, process=process)
    return ok and port_open(SMTP_CATCHER_SMTP_PORT)


def start_smtp_catcher(timeout: float | None = None) -> ManagedProcess:
    with _launcher_lock():
        record = read_record("smtp_catcher")
        if record is not None:
            return ManagedProcess(record)
        preflight(["smtp_catcher"])
        process = _spawn_smtp_catcher()
        timeout = timeout or _timeout("smtp_catcher")
        if not smtp_catcher_ready(timeout, process):
            stop_process("smtp_catcher")
            raise _not_ready("smtp_catcher", process, timeout, f"{SMTP_CATCHER_URL}/healthz")
        return process


def stop_smtp_catcher() -> bool:
    return stop_process("smtp_catcher")


# --------------------------------------------------------------------------------------------------
# Gateway (nginx)
# --------------------------------------------------------------------------------------------------
def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _location_blocks(service_hosts: Mapping[str, str]) -> str:
    blocks: list[str] = []

    def location(match: str, upstream: str, uri: str = "") -> None:
        blocks.append(f"        location {match} {{\n            proxy_pass http://{upstream}{uri};\n        }}")

    for path, service in sorted(ROUTES.items(), key=lambda item: (item[0] != "/", item[0])):
        if path == "/":
            location("/", service)
        elif path.endswith("/"):
            location(f"^~ {path}", service)
        else:
            location(f"= {path}", service)
            location(f"^~ {path}/", service)
    for service in service_hosts:
        # /_svc/<service>/readyz -> <service>/readyz (the trailing slash of proxy_pass strips the prefix)
        location(f"^~ /_svc/{service}/", service, "/")
    return "\n".join(blocks)


def render_nginx_conf(target: str = "local") -> str:
    """The gateway's nginx.conf from deploy/nginx/gateway.conf.template and ROUTES.

    target "local": 127.0.0.1 ports, paths inside .run/nginx; "docker": service names of docker-compose.
    """
    if target == "local":
        hosts = {name: f"{HOST}:{port}" for name, port in SERVICE_PORTS.items()}
        values = {
            "USER_DIRECTIVE": "user root;" if _IS_ROOT else "# (not root: workers run as the launching user)",
            "WORKER_PROCESSES": "2",
            "PID_FILE": str(NGINX_DIR / "nginx.pid"),
            "ERROR_LOG": "stderr",
            "ACCESS_LOG": "/dev/stdout",
            "TEMP_DIR": str(NGINX_DIR / "tmp"),
            "LISTEN": f"{HOST}:{GATEWAY_PORT}",
        }
    elif target == "docker":
        hosts = {name: f"{name}:{port}" for name, port in SERVICE_PORTS.items()}
        values = {
            "USER_DIRECTIVE": "user nginx;",
            "WORKER_PROCESSES": "auto",
            "PID_FILE": "/var/run/nginx.pid",
            "ERROR_LOG": "/dev/stderr",
            "ACCESS_LOG": "/dev/stdout",
            "TEMP_DIR": "/var/cache/nginx",
            "LISTEN": "8000",
        }
    else:
        raise ValueError(f"unknown target {target!r} (local or docker)")
    values["UPSTREAMS"] = "\n".join(
        f"    upstream {name} {{\n        server {host} max_fails=0;\n        keepalive 16;\n    }}"
        for name, host in hosts.items()
    )
    values["ROUTES"] = _location_blocks(hosts)
    text = NGINX_TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    leftover = re.findall(r"@@[A-Z_]+@@", text)
    if leftover:
        raise LauncherError(f"{NGINX_TEMPLATE} has placeholders the launcher does not know: {leftover}")
    return text


def _prepare_gateway() -> list[str]:
    (NGINX_DIR / "tmp").mkdir(parents=True, exist_ok=True)
    (NGINX_DIR / "nginx.conf").write_text(render_nginx_conf("local"))
    command = [nginx_binary(), "-p", str(NGINX_DIR), "-c", str(NGINX_DIR / "nginx.conf"), "-e", "stderr"]
    test = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if test.returncode != 0:
        raise LauncherError(f"nginx rejects the generated {NGINX_DIR / 'nginx.conf'}:\n{test.stderr}")
    return [*command, "-g", "daemon off;"]


def gateway_ready(timeout: float = 0.0, process: ManagedProcess | None = None) -> bool:
    return wait_http(f"{GATEWAY_URL}/_gateway/healthz", timeout, process=process)


def start_gateway(timeout: float | None = None) -> ManagedProcess:
    with _launcher_lock():
        record = read_record(GATEWAY)
        if record is not None:
            return ManagedProcess(record)
        preflight([GATEWAY])
        process = _spawn(GATEWAY, "gateway", _prepare_gateway(), port=GATEWAY_PORT)
        timeout = timeout or _timeout("gateway")
        if not gateway_ready(timeout, process):
            stop_process(GATEWAY)
            raise _not_ready(GATEWAY, process, timeout, f"{GATEWAY_URL}/_gateway/healthz")
        return process


def stop_gateway() -> bool:
    return stop_process(GATEWAY)


# --------------------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------------------
def instance_name(name: str, instance: str = "") -> str:
    return f"{name}-{instance}" if instance else name


def _check_service_name(name: str) -> None:
    if name not in SERVICE_PORTS:
        raise LauncherError(f"Unknown service {name!r}; the services are {', '.join(SERVICES)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def service_env(name: str, *, instance: str = "", port: int | None = None) -> dict[str, str]:
    """The environment a service process gets (defaults below, any variable already set wins)."""
    env = dict(os.environ)
    env.update(
        {
            "SERVICE_NAME": name,
            "INSTANCE": instance,
            "HTTP_HOST": HOST,
            "HTTP_PORT": str(port or SERVICE_PORTS[name]),
            "DATABASE_URL": database_url(name),
            "KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP,
            "SMTP_HOST": os.environ.get("SMTP_HOST") or HOST,
            "SMTP_PORT": os.environ.get("SMTP_PORT") or str(SMTP_CATCHER_SMTP_PORT),
            "SMTP_USERNAME": os.environ.get("SMTP_USERNAME", ""),
            "SMTP_PASSWORD": os.environ.get("SMTP_PASSWORD", ""),
            "SMTP_STARTTLS": os.environ.get("SMTP_STARTTLS") or "false",
            "MAIL_FROM": os.environ.get("MAIL_FROM") or DEFAULT_MAIL_FROM,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "SECRET_KEY": secret_key(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_service(
    name: str, *, instance: str = "", env: dict[str, str] | None = None, port: int | None = None
) -> ManagedProcess:
    """Start `python -m services.<name>` (one more instance if `instance` is given); does not wait.

    An extra instance gets a free port unless `port` is given, and its own pid file and log
    (`<name>-<instance>`). Returns the running one if that name is already up.
    """
    _check_service_name(name)
    proc_name = instance_name(name, instance)
    with _launcher_lock():
        record = read_record(proc_name)
        if record is not None:
            return ManagedProcess(record)
        if port is None:
            port = _free_port() if instance else SERVICE_PORTS[name]
        _wait_port_released(port)
        check_ports({proc_name: port})
        full_env = service_env(name, instance=instance, port=port)
        full_env.update(env or {})
        return _spawn(
            proc_name, "service", [sys.executable, "-m", f"services.{name}"], env=full_env,
            port=port, service=name, instance=instance,
        )  # fmt: skip


def _wait_port_released(port: int, timeout: float = 15.0) -> None:
    """A process just killed may hold its listening socket for a moment while its threads exit: give the port
    that moment before calling it taken (a port another program really holds is still refused afterwards)."""
    deadline = time.monotonic() + timeout
    while port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.2)


def service_url(name: str, instance: str = "") -> str:
    record = read_record(instance_name(name, instance))
    port = record.port if record and record.port else SERVICE_PORTS[name]
    return f"http://{HOST}:{port}"


def service_ready(name: str, timeout: float = 0.0, instance: str = "") -> bool:
    """True once the service answers 200 on /readyz (polls up to `timeout` seconds)."""
    record = read_record(instance_name(name, instance))
    process = ManagedProcess(record) if record else None
    return wait_http(f"{service_url(name, instance)}/readyz", timeout, process=process)


def stop_service(name: str, instance: str = "", sig: int = signal.SIGTERM, timeout: float | None = None) -> bool:
    """Send `sig` to the service's process group, wait, then SIGKILL if it stays."""
    return stop_process(instance_name(name, instance), sig, timeout)


def kill_service(name: str, instance: str = "") -> bool:
    """SIGKILL the service (a crash: no shutdown code runs)."""
    return stop_process(instance_name(name, instance), signal.SIGKILL, 10.0)


def service_instances(name: str) -> list[str]:
    """Recorded process names of a service: its main one and any extra instances."""
    return [n for n in recorded_names() if n == name or n.startswith(name + "-")]


Step = tuple[str, str, "subprocess.Popen[bytes]"]  # (log name, what it does, the process)


def _start_step(name: str, command: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a one-off command (topics, migrations) with its output appended to .run/logs/<name>.log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with log_path(name).open("ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        out.flush()
        return subprocess.Popen(command, env=dict(env), cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _finish_steps(steps: list[Step], timeout: float = 300.0) -> None:
    """Wait for one-off commands [(log name, what, process)]; raise for the first that failed."""
    failures = []
    deadline = time.monotonic() + timeout
    try:
        for name, what, process in steps:
            try:
                code = process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
                what += f" (timed out after {timeout:.0f}s)"
            if code != 0:
                failures.append(f"{what} failed (exit {code}). Last lines of {_rel(log_path(name))}:\n{log_tail(name)}")
    finally:
        _kill_steps(steps)  # interrupted: leave nothing running
    if failures:
        raise LauncherError("\n".join(failures))


def _kill_steps(steps: list[Step]) -> None:
    for _, _, process in steps:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _run_step(name: str, command: list[str], env: Mapping[str, str], what: str) -> None:
    _finish_steps([(name, what, _start_step(name, command, env))])


def create_topics() -> None:
    """`python -m shared.topics create`: the topics every service needs (auto-creation is off)."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP, "PYTHONUNBUFFERED": "1"}
    _run_step("topics", [sys.executable, "-m", "shared.topics", "create"], env, "Creating Kafka topics")


def _start_topics_step() -> Step:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "shared.topics", "create"]
    return ("topics", "Creating Kafka topics", _start_step("topics", command, env))


def _start_migration_steps(names: Iterable[str]) -> list[Step]:
    steps = []
    for name in names:
        _check_service_name(name)
        command = [sys.executable, "-m", f"services.{name}", "migrate"]
        steps.append((f"migrate-{name}", f"Migrating the {name} database", _start_step(f"migrate-{name}", command,
                                                                                     service_env(name))))  # fmt: skip
    return steps


def migrate_services(names: Iterable[str], *, with_topics: bool = False) -> None:
    """`python -m services.<name> migrate` for each (in parallel): Alembic migrations of their databases.

    with_topics: also `python -m shared.topics create` at the same time.
    """
    _finish_steps(([_start_topics_step()] if with_topics else []) + _start_migration_steps(names))


def migrate_service(name: str) -> None:
    migrate_services([name])


def _service_has_code(name: str) -> bool:
    return (REPO_ROOT / "services" / name / "__main__.py").exists()


def _services_wanted() -> tuple[str, ...]:
    """The services `up` starts: GROUNDSWELL_SERVICES=membership,events if set (each must exist),
    else every service whose code exists (services/<name>/__main__.py)."""
    raw = os.environ.get("GROUNDSWELL_SERVICES")
    if raw is None:
        return tuple(s for s in SERVICES if _service_has_code(s))
    wanted = tuple(s.strip() for s in raw.split(",") if s.strip())
    for name in wanted:
        _check_service_name(name)
        if not _service_has_code(name):
            raise LauncherError(f"GROUNDSWELL_SERVICES names {name}, but services/{name}/__main__.py does not exist.")
    return wanted


# --------------------------------------------------------------------------------------------------
# The whole system
# --------------------------------------------------------------------------------------------------
def planned_components(services: bool = True) -> list[str]:
    components = []
    if not POSTGRES_EXTERNAL:
        components.append("postgres")
    if not KAFKA_EXTERNAL:
        components.append("kafka")
    components.append("smtp_catcher")
    if services:
        components.extend(_services_wanted())
        components.append(GATEWAY)
    return components


def _component_ready(name: str, process: ManagedProcess | None, timeout: float) -> None:
    """Wait for one component; raise LauncherError (with its log) if it never gets ready."""
    if name == "kafka":
        _wait_kafka(process, timeout)
    elif name == "postgres":
        _wait_postgres(process, timeout)
    elif name == "smtp_catcher":
        if not smtp_catcher_ready(timeout, process):
            raise _not_ready(name, process, timeout, f"{SMTP_CATCHER_URL}/healthz")
    elif name == GATEWAY:
        if not gateway_ready(timeout, process):
            raise _not_ready(name, process, timeout, f"{GATEWAY_URL}/_gateway/healthz")
    elif not service_ready(name, timeout):
        raise _not_ready(name, process, timeout, f"{service_url(name)}/readyz")


def _ensure_up(services: bool, started: list[str]) -> None:
    components = planned_components(services)
    if services:
        absent = [s for s in SERVICES if s not in components and not _service_has_code(s)]
        if absent and "GROUNDSWELL_SERVICES" not in os.environ:
            _say(f"not starting {', '.join(absent)}: no code yet (services/<name>/__main__.py)")
    running = {c: ManagedProcess(r) for c in components if (r := read_record(c)) is not None}
    to_start = [c for c in components if c not in running]
    preflight(to_start)
    if running:
        _say("reusing what already runs: " + ", ".join(running))
    processes: dict[str, ManagedProcess | None] = dict(running)

    # Infrastructure: spawn what is missing, then wait for each (Kafka and PostgreSQL start together).
    spawners = {"postgres": _spawn_postgres, "kafka": _spawn_kafka, "smtp_catcher": _spawn_smtp_catcher}
    for name in ("postgres", "kafka", "smtp_catcher"):
        if name in to_start:
            _say(f"starting {name} ...")
            processes[name] = spawners[name]()
            started.append(name)
    if "postgres" in components:
        _component_ready("postgres", processes.get("postgres"), _timeout("postgres"))
    ensure_databases()  # cheap when they exist; keeps an older cluster in line with the service list

    service_names = [c for c in components if c in SERVICE_PORTS] if services else []
    new_services = [c for c in service_names if c in to_start]
    steps: list[Step] = []
    try:
        if new_services:  # migrations need only PostgreSQL: run them while Kafka is still starting
            _say(f"migrating the databases of {', '.join(new_services)} ...")
            steps = _start_migration_steps(new_services)
        for name in ("kafka", "smtp_catcher"):
            if name in components:
                _component_ready(name, processes.get(name), _timeout(name))
        if new_services:
            _say("creating Kafka topics ...")
            steps.append(_start_topics_step())
    except BaseException:
        _kill_steps(steps)
        raise
    _finish_steps(steps)
    if not services:
        return

    if new_services:
        for name in new_services:
            _say(f"starting {name} on port {SERVICE_PORTS[name]} ...")
            processes[name] = start_service(name)
            started.append(name)
    for name in service_names:
        _component_ready(name, processes.get(name), _timeout("service"))
    if GATEWAY in to_start:
        _say(f"starting the gateway on port {GATEWAY_PORT} ...")
        processes[GATEWAY] = _spawn(GATEWAY, "gateway", _prepare_gateway(), port=GATEWAY_PORT)
        started.append(GATEWAY)
    _component_ready(GATEWAY, processes.get(GATEWAY), _timeout("gateway"))


def _kind(name: str) -> str:
    return name if name in START_TIMEOUTS else "service"


def ensure_up(services: bool = True, *, started: list[str] | None = None) -> None:
    """Start whatever of the system is not running yet and wait until all of it is ready (idempotent).

    services=False: only Kafka, PostgreSQL and the SMTP catcher. If anything fails, the parts this
    call started are stopped again and LauncherError says what is wrong. `started`, if given,
    receives the names this call started.
    """
    started_here: list[str] = [] if started is None else started
    with _launcher_lock():
        try:
            _ensure_up(services, started_here)
        except BaseException:
            if started_here:
                _say("rolling back: stopping " + ", ".join(reversed(started_here)))
                _stop_names(list(reversed(started_here)))
            raise


def _stop_names(names: Iterable[str]) -> list[str]:
    """Stop recorded processes by name in three waves: the gateway, the services, the infrastructure.

    Services stop before Kafka and PostgreSQL so they can finish in-flight work; each wave stops in parallel.
    """

    def wave(name: str) -> int:
        return 0 if name == GATEWAY else 2 if name in INFRA else 1

    stopped: list[str] = []
    tiers: dict[int, list[ProcessRecord]] = {}
    for name in set(names):
        record = read_record(name)
        if record is not None:
            tiers.setdefault(wave(name), []).append(record)
    for level in sorted(tiers):
        stop_records(tiers[level])
        stopped.extend(r.name for r in tiers[level])
    return stopped


def stop_all() -> list[str]:
    """Stop everything the launcher started (any run), in order; returns the names stopped."""
    with _launcher_lock():
        stopped = _stop_names(recorded_names())
        # A postgres left from a lost pid file would block the next start: stop it via its own pid file.
        postmaster = pg_data_dir() / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(postmaster.read_text().split()[0])
            if _pid_alive(pid) and "postgres" in Path(f"/proc/{pid}/comm").read_text():
                stop_records([ProcessRecord(name="postgres", pid=pid, kind="postgres", command=[])])
                stopped.append("postgres")
        return stopped


def status() -> list[dict[str, Any]]:
    """One row per known component: name, pid, port, state (ready / running / stopped), log."""
    rows = []
    names = list(dict.fromkeys([*planned_components(True), *recorded_names()]))
    for name in names:
        record = read_record(name)
        row: dict[str, Any] = {"name": name, "pid": None, "port": None, "state": "stopped", "log": None}
        if name == "kafka" and KAFKA_EXTERNAL:
            row.update(state="external", port=KAFKA_BOOTSTRAP)
        if name == "postgres" and POSTGRES_EXTERNAL:
            row.update(state="external")
        if record is not None:
            row.update(pid=record.pid, port=record.port, state="running", log=_rel(Path(record.log or log_path(name))))
            if _quick_ready(name, record):
                row["state"] = "ready"
        rows.append(row)
    return rows


def _quick_ready(name: str, record: ProcessRecord) -> bool:
    if name == "kafka":
        return port_open(KAFKA_PORT) and kafka_ready(2.0)
    if name == "postgres":
        return postgres_ready()
    if name == "smtp_catcher":
        return http_status(f"{SMTP_CATCHER_URL}/healthz") == 200
    if name == GATEWAY:
        return http_status(f"{GATEWAY_URL}/_gateway/healthz") == 200
    if record.port:
        return http_status(f"http://{HOST}:{record.port}/readyz") == 200
    return False


def addresses(services: bool = True) -> str:
    lines = []
    if services:
        lines.append(f"  Public site (gateway)   {PUBLIC_BASE_URL}   (also {GATEWAY_URL})")
        for name in _services_wanted():
            lines.append(f"  {name:<23} {service_url(name)}   (via gateway: {GATEWAY_URL}/_svc/{name}/readyz)")
    lines.append(f"  Caught mail (web)       http://localhost:{SMTP_CATCHER_HTTP_PORT}")
    lines.append(f"  SMTP catcher            {HOST}:{SMTP_CATCHER_SMTP_PORT}")
    lines.append(f"  Kafka bootstrap         {KAFKA_BOOTSTRAP}")
    db_example = database_url("<service>").replace(f":{PG_PASSWORD}@", ":***@")
    lines.append(f"  PostgreSQL              {db_example}")
    lines.append(f"  Logs                    {_rel(LOG_DIR)}/<name>.log      State: {_rel(STATE_DIR)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGHUP so `run` unwinds like on Ctrl-C."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def _cmd_up(services: bool, started_file: Path | None) -> int:
    started: list[str] = []
    try:
        ensure_up(services, started=started)
    finally:
        if started_file is not None:
            started_file.parent.mkdir(parents=True, exist_ok=True)
            started_file.write_text("".join(f"{n}\n" for n in started))
    print("\nGroundswell is up" + ("" if services else " (infrastructure only)") + ":\n" + addresses(services))
    print("\nStop it with `make stop` (python -m deploy.local.launcher stop).")
    return 0


def _cmd_run(services: bool) -> int:
    global _tie_children_to_launcher
    _tie_children_to_launcher = True
    # Ctrl-C must work even when started from a script that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    try:
        ensure_up(services)
        print("\nGroundswell is running:\n" + addresses(services))
        print("\nPress Ctrl-C to stop everything.", flush=True)
        down: set[str] = set()  # reported as stopped, not seen running since
        while True:
            time.sleep(1.0)
            for name in planned_components(services):
                if (name == "kafka" and KAFKA_EXTERNAL) or (name == "postgres" and POSTGRES_EXTERNAL):
                    continue
                if read_record(name) is not None:
                    if name in down:
                        down.discard(name)
                        _say(f"{name} runs again")
                elif name not in down:
                    down.add(name)
                    _say(f"{name} has stopped. Last lines of {_rel(log_path(name))}:\n{log_tail(name, 15)}")
    except (KeyboardInterrupt, _Stop):
        print()
        _say("stopping everything ...")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # nothing may interrupt the clean-up
            signal.signal(sig, signal.SIG_IGN)
        stopped = stop_all()
        _say("stopped: " + (", ".join(stopped) or "nothing was running"))
    return 0


def _cmd_stop(only: list[str] | None) -> int:
    if only is None:
        stopped = stop_all()
    else:
        with _launcher_lock():
            names = set(only)
            for name in only:  # extra instances belong to their service
                if name in SERVICE_PORTS:
                    names.update(service_instances(name))
            stopped = _stop_names(names)
    print("Stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _cmd_status(quiet: bool, as_json: bool) -> int:
    rows = status()
    if as_json:
        print(json.dumps(rows, indent=1))
    elif not quiet:
        print(f"{'NAME':<22} {'STATE':<9} {'PID':>8}  {'PORT':<16} LOG")
        for row in rows:
            print(
                f"{row['name']:<22} {row['state']:<9} {row['pid'] or '-':>8}  {str(row['port'] or '-'):<16} "
                f"{row['log'] or '-'}"
            )
    planned = set(planned_components(True))
    return 0 if all(r["state"] in ("ready", "external") for r in rows if r["name"] in planned) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local.launcher",
        description="Run Groundswell locally without Docker (state in .run/). See docs/operations.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start everything and stay in the foreground; Ctrl-C stops it all")
    run.add_argument("--no-services", action="store_true", help="infrastructure only")
    up = sub.add_parser("up", help="start everything in the background (reusing what runs) and return")
    up.add_argument("--no-services", action="store_true", help="infrastructure only")
    up.add_argument("--started-file", type=Path, help="write the names this call started to this file")
    sub.add_parser("infra", help="start only Kafka, PostgreSQL and the SMTP catcher in the background")
    for name in ("stop", "down"):
        stop = sub.add_parser(name, help="stop everything the launcher started")
        stop.add_argument("--only", help="comma-separated names to stop (default: everything)")
        stop.add_argument("--from-file", type=Path, help="stop only the names listed in this file")
    st = sub.add_parser("status", help="what runs; exit code 0 only if everything is ready")
    st.add_argument("--quiet", "-q", action="store_true")
    st.add_argument("--json", action="store_true")
    conf = sub.add_parser("nginx-conf", help="print the gateway's nginx.conf")
    conf.add_argument("--target", choices=("local", "docker"), default="local")
    logs = sub.add_parser("logs", help="print the end of a component's log")
    logs.add_argument("name")
    logs.add_argument("-n", type=int, default=50)
    args = parser.parse_args(argv)
    if args.command != "run":  # `run` installs its own handlers
        signal.signal(signal.SIGTERM, _raise_stop)

    try:
        if args.command == "run":
            return _cmd_run(not args.no_services)
        if args.command == "up":
            return _cmd_up(not args.no_services, args.started_file)
        if args.command == "infra":
            return _cmd_up(False, None)
        if args.command in ("stop", "down"):
            only = None
            if args.only:
                only = [n.strip() for n in args.only.split(",") if n.strip()]
            if args.from_file:
                only = (only or []) + (args.from_file.read_text().split() if args.from_file.exists() else [])
            return _cmd_stop(only)
        if args.command == "status":
            return _cmd_status(args.quiet, args.json)
        if args.command == "nginx-conf":
            print(render_nginx_conf(args.target), end="")
            return 0
        if args.command == "logs":
            print(log_tail(args.name, args.n))
            return 0
    except LauncherError as exc:
        print(f"\n[launcher] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("\n[launcher] interrupted; what this run started has been stopped.", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
