"""The whole local stack: which parts to run, starting what is missing in dependency order (and rolling
back what this call started if anything fails), stopping everything in waves, and its status."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deploy.local import gateway, kafka, postgres
from deploy.local.catcher import smtp_catcher_ready, spawn_smtp_catcher
from deploy.local.config import (
    GATEWAY,
    GATEWAY_PORT,
    GATEWAY_URL,
    HOST,
    INFRA,
    KAFKA_BOOTSTRAP,
    KAFKA_EXTERNAL,
    KAFKA_PORT,
    LOG_DIR,
    POSTGRES_EXTERNAL,
    PUBLIC_BASE_URL,
    SERVICE_PORTS,
    SERVICES,
    SMTP_CATCHER_HTTP_PORT,
    SMTP_CATCHER_SMTP_PORT,
    SMTP_CATCHER_URL,
    STATE_DIR,
    rel,
    required_ports,
    say,
    start_timeout,
)
from deploy.local.gateway import gateway_ready, spawn_gateway
from deploy.local.kafka import kafka_ready, spawn_kafka, start_topics_step, wait_kafka
from deploy.local.postgres import (
    PG_PASSWORD,
    database_url,
    ensure_databases,
    pg_data_dir,
    postgres_ready,
    spawn_postgres,
    wait_postgres,
)
from deploy.local.probes import check_ports, http_status, not_ready, port_open
from deploy.local.processes import (
    ManagedProcess,
    ProcessRecord,
    Step,
    finish_steps,
    kill_steps,
    launcher_lock,
    log_path,
    pid_alive,
    read_record,
    recorded_names,
    stop_records,
)
from deploy.local.services import (
    extra_instances,
    instance_name,
    service_has_code,
    service_ready,
    service_url,
    services_wanted,
    start_migration_steps,
    start_service,
)


def preflight(components: Iterable[str]) -> None:
    """Check tools and ports for the components about to start; raise LauncherError before anything starts."""
    components = list(components)
    if "kafka" in components:
        kafka.check_tools()
    if "postgres" in components:
        postgres.check_tools()
    if GATEWAY in components:
        gateway.check_tools()
    check_ports(required_ports(components))


def planned_components(services: bool = True) -> list[str]:
    components = []
    if not POSTGRES_EXTERNAL:
        components.append("postgres")
    if not KAFKA_EXTERNAL:
        components.append("kafka")
    components.append("smtp_catcher")
    if services:
        components.extend(services_wanted())
        components.append(GATEWAY)
    return components


def component_ready(name: str, process: ManagedProcess | None, timeout: float) -> None:
    """Wait for one component; raise LauncherError (with its log) if it never gets ready."""
    if name == "kafka":
        wait_kafka(process, timeout)
    elif name == "postgres":
        wait_postgres(process, timeout)
    elif name == "smtp_catcher":
        if not smtp_catcher_ready(timeout, process):
            raise not_ready(name, process, timeout, f"{SMTP_CATCHER_URL}/healthz")
    elif name == GATEWAY:
        if not gateway_ready(timeout, process):
            raise not_ready(name, process, timeout, f"{GATEWAY_URL}/_gateway/healthz")
    elif not service_ready(name, timeout):
        raise not_ready(name, process, timeout, f"{service_url(name)}/readyz")


def _ensure_up(services: bool, started: list[str]) -> None:
    components = planned_components(services)
    if services:
        absent = [s for s in SERVICES if s not in components and not service_has_code(s)]
        if absent and "GROUNDSWELL_SERVICES" not in os.environ:
            say(f"not starting {', '.join(absent)}: no code yet (services/<name>/__main__.py)")
    running = {c: ManagedProcess(r) for c in components if (r := read_record(c)) is not None}
    to_start = [c for c in components if c not in running]
    preflight(to_start)
    if running:
        say("reusing what already runs: " + ", ".join(running))
    processes: dict[str, ManagedProcess | None] = dict(running)

    # Infrastructure: spawn what is missing, then wait for each (Kafka and PostgreSQL start together).
    spawners = {"postgres": spawn_postgres, "kafka": spawn_kafka, "smtp_catcher": spawn_smtp_catcher}
    for name in ("postgres", "kafka", "smtp_catcher"):
        if name in to_start:
            say(f"starting {name} ...")
            processes[name] = spawners[name]()
            started.append(name)
    if "postgres" in components:
        component_ready("postgres", processes.get("postgres"), start_timeout("postgres"))
    ensure_databases()  # cheap when they exist; keeps an older cluster in line with the service list

    service_names = [c for c in components if c in SERVICE_PORTS] if services else []
    new_services = [c for c in service_names if c in to_start]
    steps: list[Step] = []
    try:
        if new_services:  # migrations need only PostgreSQL: run them while Kafka is still starting
            say(f"migrating the databases of {', '.join(new_services)} ...")
            steps = start_migration_steps(new_services)
        for name in ("kafka", "smtp_catcher"):
            if name in components:
                component_ready(name, processes.get(name), start_timeout(name))
        if new_services:
            say("creating Kafka topics ...")
            steps.append(start_topics_step())
    except BaseException:
        kill_steps(steps)
        raise
    finish_steps(steps)
    if not services:
        return

    if new_services:
        for name in new_services:
            say(f"starting {name} on port {SERVICE_PORTS[name]} ...")
            processes[name] = start_service(name)
            started.append(name)
    for name in service_names:
        component_ready(name, processes.get(name), start_timeout("service"))
    _ensure_extra_instances(service_names, started)
    if GATEWAY in to_start:
        say(f"starting the gateway on port {GATEWAY_PORT} ...")
        processes[GATEWAY] = spawn_gateway()
        started.append(GATEWAY)
    else:
        gateway.reload_gateway()  # instances added since it started join its upstreams
    component_ready(GATEWAY, processes.get(GATEWAY), start_timeout("gateway"))


def _ensure_extra_instances(service_names: Iterable[str], started: list[str]) -> None:
    """Start the extra instances GROUNDSWELL_INSTANCES asks for that do not run yet (docs/scaling.md), then wait."""
    new: list[tuple[str, str, ManagedProcess]] = []
    for name in service_names:
        for instance, port in extra_instances(name):
            if read_record(instance_name(name, instance)) is None:
                say(f"starting {instance_name(name, instance)} on port {port} ...")
                new.append((name, instance, start_service(name, instance=instance, port=port)))
                started.append(instance_name(name, instance))
    for name, instance, process in new:
        if not service_ready(name, start_timeout("service"), instance=instance):
            raise not_ready(instance_name(name, instance), process, start_timeout("service"),
                            f"{service_url(name, instance)}/readyz")


def ensure_up(services: bool = True, *, started: list[str] | None = None) -> None:
    """Start whatever of the system is not running yet and wait until all of it is ready (idempotent).

    services=False: only Kafka, PostgreSQL and the SMTP catcher. If anything fails, the parts this
    call started are stopped again and LauncherError says what is wrong. `started`, if given,
    receives the names this call started.
    """
    started_here: list[str] = [] if started is None else started
    with launcher_lock():
        try:
            _ensure_up(services, started_here)
        except BaseException:
            if started_here:
                say("rolling back: stopping " + ", ".join(reversed(started_here)))
                stop_names(list(reversed(started_here)))
            raise


def stop_names(names: Iterable[str]) -> list[str]:
    """Stop recorded processes by name in three waves: the gateway, the services, the infrastructure.

    Services stop before Kafka and PostgreSQL so they can finish in-flight work; each wave stops in parallel.
    """

    def wave(record: ProcessRecord) -> int:  # a node of a Kafka cluster (kafka_cluster.py) is infrastructure too
        return 0 if record.name == GATEWAY else 2 if record.name in INFRA or record.kind == "kafka" else 1

    stopped: list[str] = []
    tiers: dict[int, list[ProcessRecord]] = {}
    for name in set(names):
        record = read_record(name)
        if record is not None:
            tiers.setdefault(wave(record), []).append(record)
    for level in sorted(tiers):
        stop_records(tiers[level])
        stopped.extend(r.name for r in tiers[level])
    return stopped


def stop_all() -> list[str]:
    """Stop everything the launcher started (any run), in order; returns the names stopped."""
    with launcher_lock():
        stopped = stop_names(recorded_names())
        # A postgres left from a lost pid file would block the next start: stop it via its own pid file.
        postmaster = pg_data_dir() / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(postmaster.read_text().split()[0])
            if pid_alive(pid) and "postgres" in Path(f"/proc/{pid}/comm").read_text():
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
            row.update(pid=record.pid, port=record.port, state="running", log=rel(Path(record.log or log_path(name))))
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
        for name in services_wanted():
            lines.append(f"  {name:<23} {service_url(name)}   (/readyz, /metrics, /docs: not through the gateway)")
    lines.append(f"  Caught mail (web)       http://localhost:{SMTP_CATCHER_HTTP_PORT}")
    lines.append(f"  SMTP catcher            {HOST}:{SMTP_CATCHER_SMTP_PORT}")
    lines.append(f"  Kafka bootstrap         {KAFKA_BOOTSTRAP}")
    db_example = database_url("<service>").replace(f":{PG_PASSWORD}@", ":***@")
    lines.append(f"  PostgreSQL              {db_example}")
    lines.append(f"  Logs                    {rel(LOG_DIR)}/<name>.log      State: {rel(STATE_DIR)}")
    return "\n".join(lines)
