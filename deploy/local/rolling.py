"""Rolling restarts: every instance of a service replaced one at a time while the others answer (docs/operations.md,
"Upgrades without downtime").

An upgrade is: new code in place (`git pull && make install`), the expand migrations applied while the old code
still serves (they only add: tests/contracts/test_migrations_expand_only.py), then `make roll`. For each instance:
the gateway stops sending it new requests (it is "draining": left out of the upstream, nginx reloaded, requests in
flight finish), it is stopped with SIGTERM (uvicorn finishes what it serves, the Kafka consumers leave their groups so
the partitions move at once, anything not committed is handled again by the other instance and absorbed by its
inbox), started again from the new code, and put back once ready. A service with one instance gets a temporary
second one first, so there is always one serving: old and new code side by side for a moment, which is why events
only ever gain fields and migrations only ever add.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from deploy.local.config import SERVICE_PORTS, LauncherError, say, start_timeout
from deploy.local.gateway import reload_gateway
from deploy.local.processes import ManagedProcess, read_record
from deploy.local.services import (
    instance_name,
    mark_draining,
    migrate_services,
    service_instances,
    service_ready,
    start_service,
    stop_service,
)

SURGE = "r"  # the temporary extra instance of a service that runs only one
STOP_GRACE_S = 30.0
# Waiting longer than `up` does costs nothing here (the other instances serve) and a busy machine is slow to start one.
READY_TIMEOUT_S = 300.0


def instances_of(name: str) -> list[tuple[str, int]]:
    """(instance letter, port) of the service's running instances, its main one ("") first."""
    found = []
    for proc_name in service_instances(name):
        record = read_record(proc_name)
        if record is not None and record.kind == "service" and record.port:
            found.append((record.instance, record.port))
    return sorted(found)


def _start_and_wait(pool: ThreadPoolExecutor, items: list[tuple[str, str, int | None]]) -> None:
    """Start (name, instance, port) from this thread, the one that stays, then wait for all to be ready."""
    started = [(n, i, start_service(n, instance=i, port=p)) for n, i, p in items]

    def ready(item: tuple[str, str, ManagedProcess]) -> None:
        name, instance, process = item
        if not service_ready(name, max(READY_TIMEOUT_S, start_timeout("service")), instance=instance):
            raise LauncherError(
                f"{instance_name(name, instance)} did not become ready (see `python -m deploy.local.launcher logs "
                f"{instance_name(name, instance)}`); the other instances still serve (pid {process.pid})."
            )

    list(pool.map(ready, started))


def _stop(pool: ThreadPoolExecutor, items: list[tuple[str, str]]) -> None:
    """SIGTERM: uvicorn finishes what it serves, the consumers leave their groups; SIGKILL after STOP_GRACE_S."""
    list(pool.map(lambda item: stop_service(item[0], item[1], signal.SIGTERM, STOP_GRACE_S), items))


def _drain(items: list[tuple[str, str]]) -> None:
    for name, instance in items:
        mark_draining(name, instance)
    reload_gateway()  # returns once nginx sends nothing new to them; what they serve now finishes


def roll(names: Iterable[str], *, progress: Callable[[str], None] = say) -> None:
    """Replace every running instance of each named service, one instance of each service at a time (the services
    side by side), never leaving a service without an instance that serves."""
    names = [n for n in names if instances_of(n)]
    if not names:
        raise LauncherError("No service runs: start the system first (make up).")
    surged = [n for n in names if len(instances_of(n)) == 1]
    with ThreadPoolExecutor(max(1, len(names))) as pool:
        if surged:
            progress(f"starting a temporary second instance of {', '.join(surged)} ...")
            _start_and_wait(pool, [(n, SURGE, None) for n in surged])
            reload_gateway()
        plan = {n: [i for i in instances_of(n) if i[0] != SURGE] for n in names}
        for step in range(max(len(p) for p in plan.values())):
            batch = [(n, *plan[n][step]) for n in names if step < len(plan[n])]
            progress("replacing " + ", ".join(instance_name(n, i) for n, i, _ in batch) + " ...")
            _drain([(n, i) for n, i, _ in batch])
            _stop(pool, [(n, i) for n, i, _ in batch])
            _start_and_wait(pool, [(n, i, port) for n, i, port in batch])
            reload_gateway()
        if surged:
            progress(f"stopping the temporary instance of {', '.join(surged)} ...")
            _drain([(n, SURGE) for n in surged])
            _stop(pool, [(n, SURGE) for n in surged])
            reload_gateway()


def upgrade(names: Iterable[str]) -> None:
    """`make roll`: the expand migrations first (the old code keeps working on them), then the rolling restart."""
    names = list(names)
    say(f"migrating the databases of {', '.join(names)} (expand only; the running code keeps working) ...")
    migrate_services(names, with_topics=True)
    roll(names)
    say("every instance now runs the code on disk.")


def default_services() -> list[str]:
    return [n for n in SERVICE_PORTS if instances_of(n)]
