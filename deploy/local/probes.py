"""Whether something listens or answers: ports checked before anything starts (a port another program
holds is named, and nothing starts), and readiness polled after a start.

Synchronous on purpose: the launcher's CLI and the async tests call the same functions, so an async
check runs on a private event loop in a worker thread (`run_in_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploy.local.config import HOST, LauncherError, rel
from deploy.local.processes import ManagedProcess, log_path, log_tail


def run_in_thread(factory: Callable[[], Any]) -> Any:
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

    def answers() -> bool:
        return http_status(url, timeout=min(2.0, max(0.2, deadline - time.monotonic()))) == 200

    return wait_until(answers, timeout, process, interval=0.2)


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_until(
    check: Callable[[], bool], timeout: float, process: ManagedProcess | None = None, interval: float = 0.25
) -> bool:
    """Poll `check` until it holds (True) or timeout passes (False); stop early if process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if process is not None and process.poll() is not None:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def not_ready(name: str, process: ManagedProcess | None, timeout: float, what: str) -> LauncherError:
    """The error for a part that died or never got ready, with the end of its log."""
    died = process is not None and process.poll() is not None
    state = (
        f"exited with code {process.returncode}" if died and process else f"did not become ready within {timeout:.0f}s"
    )
    return LauncherError(
        f"{name} {state} ({what}).\nLast lines of {rel(log_path(name))}:\n{log_tail(name)}\n"
        f"Fix the cause shown above, then run the launcher again (`make up`); `make stop` cleans up."
    )


# --------------------------------------------------------------------------------------------------
# Ports: checked before anything starts
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


def free_port() -> int:
    """A port the kernel has just handed out and nobody listens on (for an extra instance)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
