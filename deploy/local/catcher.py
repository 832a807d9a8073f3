"""The SMTP catcher (deploy/local/smtp_catcher.py) as one of the launcher's processes: every email the
services send lands there, readable on its web page and API."""

from __future__ import annotations

import os
import sys

from deploy.local.config import (
    HOST,
    MAIL_DIR,
    SMTP_CATCHER_HTTP_PORT,
    SMTP_CATCHER_SMTP_PORT,
    SMTP_CATCHER_URL,
    required_ports,
    start_timeout,
)
from deploy.local.probes import check_ports, not_ready, port_open, wait_http
from deploy.local.processes import ManagedProcess, launcher_lock, read_record, spawn, stop_process


def spawn_smtp_catcher() -> ManagedProcess:
    command = [
        sys.executable, "-m", "deploy.local.smtp_catcher", "--host", HOST,
        "--smtp-port", str(SMTP_CATCHER_SMTP_PORT), "--http-port", str(SMTP_CATCHER_HTTP_PORT),
        "--mail-dir", str(MAIL_DIR),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return spawn("smtp_catcher", "smtp_catcher", command, env=env, port=SMTP_CATCHER_HTTP_PORT)


def smtp_catcher_ready(timeout: float = 0.0, process: ManagedProcess | None = None) -> bool:
    ok = wait_http(f"{SMTP_CATCHER_URL}/healthz", timeout, process=process)
    return ok and port_open(SMTP_CATCHER_SMTP_PORT)


def start_smtp_catcher(timeout: float | None = None) -> ManagedProcess:
    with launcher_lock():
        record = read_record("smtp_catcher")
        if record is not None:
            return ManagedProcess(record)
        check_ports(required_ports(["smtp_catcher"]))
        process = spawn_smtp_catcher()
        timeout = timeout or start_timeout("smtp_catcher")
        if not smtp_catcher_ready(timeout, process):
            stop_process("smtp_catcher")
            raise not_ready("smtp_catcher", process, timeout, f"{SMTP_CATCHER_URL}/healthz")
        return process


def stop_smtp_catcher() -> bool:
    return stop_process("smtp_catcher")
