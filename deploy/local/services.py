"""The four services as the launcher's processes: the environment each gets, starting one (or one more
instance on a port of its own), readiness, stopping and killing, and their database migrations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from deploy.local.config import (
    BOUNCE_SMTP_PORT,
    DEFAULT_MAIL_FROM,
    HOST,
    KAFKA_BOOTSTRAP,
    PID_DIR,
    PUBLIC_BASE_URL,
    REPO_ROOT,
    SERVICE_PORTS,
    SERVICES,
    SMTP_CATCHER_SMTP_PORT,
    LauncherError,
    development_flag,
    secret_key,
)
from deploy.local.kafka import start_topics_step
from deploy.local.postgres import database_url
from deploy.local.probes import check_ports, free_port, port_in_use, wait_http
from deploy.local.processes import (
    ManagedProcess,
    Step,
    finish_steps,
    launcher_lock,
    read_record,
    recorded_names,
    spawn,
    start_step,
    stop_process,
)


def instance_name(name: str, instance: str = "") -> str:
    return f"{name}-{instance}" if instance else name


def check_service_name(name: str) -> None:
    if name not in SERVICE_PORTS:
        raise LauncherError(f"Unknown service {name!r}; the services are {', '.join(SERVICES)}")


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
            # Notifications' receiver of later bounces: the main instance's (another would need a port of its own).
            "BOUNCE_SMTP_PORT": str(BOUNCE_SMTP_PORT) if name == "notifications" and not instance else "0",
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "SECRET_KEY": secret_key(),
            **development_flag(),
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
    check_service_name(name)
    proc_name = instance_name(name, instance)
    with launcher_lock():
        record = read_record(proc_name)
        if record is not None:
            return ManagedProcess(record)
        if port is None:
            port = free_port() if instance else SERVICE_PORTS[name]
        _wait_port_released(port)
        check_ports({proc_name: port})
        full_env = service_env(name, instance=instance, port=port)
        full_env.update(env or {})
        return spawn(
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


def run_service_command(name: str, *args: str) -> int:
    """`python -m services.<name> <args>` in the foreground, with the environment the running service gets
    from the launcher (its database, SECRET_KEY, PUBLIC_BASE_URL, Kafka); its exit code."""
    check_service_name(name)
    command = [sys.executable, "-m", f"services.{name}", *args]
    return subprocess.run(command, env=service_env(name), cwd=REPO_ROOT, stdin=subprocess.DEVNULL).returncode


def service_instances(name: str) -> list[str]:
    """Recorded process names of a service: its main one and any extra instances."""
    return [n for n in recorded_names() if n == name or n.startswith(name + "-")]


def start_migration_steps(names: Iterable[str]) -> list[Step]:
    steps = []
    for name in names:
        check_service_name(name)
        command = [sys.executable, "-m", f"services.{name}", "migrate"]
        steps.append((f"migrate-{name}", f"Migrating the {name} database", start_step(f"migrate-{name}", command,
                                                                                     service_env(name))))  # fmt: skip
    return steps


def migrate_services(names: Iterable[str], *, with_topics: bool = False) -> None:
    """`python -m services.<name> migrate` for each (in parallel): Alembic migrations of their databases.

    with_topics: also `python -m shared.topics create` at the same time.
    """
    finish_steps(([start_topics_step()] if with_topics else []) + start_migration_steps(names))


def migrate_service(name: str) -> None:
    migrate_services([name])


# Extra instances of GROUNDSWELL_INSTANCES are named b, c, ... and listen 100 ports above their service's each
# (membership-b on 8101, membership-c on 8201 with the usual ports): known ports, so the gateway lists them.
INSTANCE_LETTERS = "bcdefghi"


def instances_wanted() -> dict[str, int]:
    """How many instances of each service `up` runs: GROUNDSWELL_INSTANCES=membership=2,notifications=2 (one for
    a service it does not name). Each instance serves HTTP behind the gateway and joins its consumer groups."""
    raw = os.environ.get("GROUNDSWELL_INSTANCES", "").strip()
    wanted: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, count = item.partition("=")
        name = name.strip()
        check_service_name(name)
        if not count.strip().isdigit() or not 1 <= int(count) <= len(INSTANCE_LETTERS) + 1:
            raise LauncherError(
                f"GROUNDSWELL_INSTANCES: {item!r} must be <service>=<1 to {len(INSTANCE_LETTERS) + 1}>,"
                " e.g. membership=2,notifications=2"
            )
        wanted[name] = int(count)
    return wanted


def extra_instances(name: str) -> list[tuple[str, int]]:
    """(instance, port) of the service's extra instances GROUNDSWELL_INSTANCES asks for."""
    count = instances_wanted().get(name, 1)
    return [(letter, SERVICE_PORTS[name] + 100 * (i + 1)) for i, letter in enumerate(INSTANCE_LETTERS[: count - 1])]


def instance_ports(name: str) -> list[int]:
    """The ports of the service's running instances (its main port when none is recorded): the gateway's upstream.
    An instance being drained for a restart is left out, unless it is the only one."""
    records = [r for r in map(read_record, service_instances(name)) if r is not None]
    ports = {r.port for r in records if r.port and r.kind == "service" and r.service == name}
    serving = {r.port for r in records if r.port in ports and not _draining(r.name, r.pid)}
    return sorted(serving or ports) or [SERVICE_PORTS[name]]


def _drain_marker(proc_name: str) -> Path:
    return PID_DIR / f"{proc_name}.draining"


def mark_draining(name: str, instance: str = "") -> None:
    """Leave this running instance out of the gateway's upstream from its next reload (deploy/local/rolling.py);
    the mark names the process, so the instance started again in its place is served at once."""
    record = read_record(instance_name(name, instance))
    if record is not None:
        _drain_marker(record.name).write_text(f"{record.pid}\n")


def _draining(proc_name: str, pid: int) -> bool:
    try:
        return int(_drain_marker(proc_name).read_text().split()[0]) == pid
    except (FileNotFoundError, ValueError, IndexError):
        return False


def service_has_code(name: str) -> bool:
    return (REPO_ROOT / "services" / name / "__main__.py").exists()


def services_wanted() -> tuple[str, ...]:
    """The services `up` starts: GROUNDSWELL_SERVICES=membership,events if set (each must exist),
    else every service whose code exists (services/<name>/__main__.py)."""
    raw = os.environ.get("GROUNDSWELL_SERVICES")
    if raw is None:
        return tuple(s for s in SERVICES if service_has_code(s))
    wanted = tuple(s.strip() for s in raw.split(",") if s.strip())
    for name in wanted:
        check_service_name(name)
        if not service_has_code(name):
            raise LauncherError(f"GROUNDSWELL_SERVICES names {name}, but services/{name}/__main__.py does not exist.")
    return wanted
