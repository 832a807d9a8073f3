"""`python -m deploy.local.launcher {run,up,infra,stop,down,status,nginx-conf,logs,organiser}`: the commands
the Makefile, the README and CI use; each translates its arguments into calls on the stack."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from deploy.local import rolling
from deploy.local.config import (
    KAFKA_EXTERNAL,
    PORT_OFFSET,
    POSTGRES_EXTERNAL,
    SERVICE_PORTS,
    STATE_DIR,
    LauncherError,
    rel,
    say,
)
from deploy.local.gateway import configured_tls, render_nginx_conf
from deploy.local.processes import launcher_lock, log_path, log_tail, read_record, tie_children_to_launcher
from deploy.local.services import (
    check_service_name,
    run_service_command,
    service_instances,
    service_ready,
    service_url,
)
from deploy.local.stack import addresses, ensure_up, planned_components, status, stop_all, stop_names


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
    tie_children_to_launcher()
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
                        say(f"{name} runs again")
                elif name not in down:
                    down.add(name)
                    say(f"{name} has stopped. Last lines of {rel(log_path(name))}:\n{log_tail(name, 15)}")
    except (KeyboardInterrupt, _Stop):
        print()
        say("stopping everything ...")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # nothing may interrupt the clean-up
            signal.signal(sig, signal.SIG_IGN)
        stopped = stop_all()
        say("stopped: " + (", ".join(stopped) or "nothing was running"))
    return 0


def _cmd_stop(only: list[str] | None) -> int:
    if only is None:
        stopped = stop_all()
    else:
        with launcher_lock():
            names = set(only)
            for name in only:  # extra instances belong to their service
                if name in SERVICE_PORTS:
                    names.update(service_instances(name))
            stopped = stop_names(names)
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


def _cmd_organiser(email: str, scope: str, name: str, scope_id: str | None) -> int:
    """membership's `create-organiser` against the stack this state dir and port offset describe, so the
    account lands in its database and the printed link carries its address and verifies with its key."""
    if not service_ready("membership"):
        raise LauncherError(
            f"membership does not answer at {service_url('membership')} (state {rel(STATE_DIR)}, "
            f"GROUNDSWELL_PORT_OFFSET={PORT_OFFSET}). Start Groundswell first (`make up`, or `make run` in "
            "another terminal) with the same GROUNDSWELL_STATE_DIR and GROUNDSWELL_PORT_OFFSET."
        )
    args = [f"--email={email}", f"--scope={scope}"]  # --option=value: a value may begin with '-'
    if name:
        args.append(f"--name={name}")
    if scope_id:
        args.append(f"--scope-id={scope_id}")
    return run_service_command("membership", "create-organiser", *args)


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
    organiser = sub.add_parser(
        "organiser", help="create an organiser account on the running stack: prints TOTP enrolment and a link"
    )
    organiser.add_argument("--email", required=True)
    organiser.add_argument("--name", default="")
    organiser.add_argument("--scope", choices=("network", "region", "group", "subteam"), default="network")
    organiser.add_argument("--scope-id", help="the region's, group's or sub-team's id (for those scopes)")
    roll = sub.add_parser(
        "roll", help="upgrade without downtime: expand migrations, then restart every instance one at a time"
    )
    roll.add_argument("services", nargs="*", help="the services to roll (default: every one that runs)")
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
            tls = configured_tls() if args.target == "local" else None
            print(render_nginx_conf(args.target, tls=tls), end="")
            return 0
        if args.command == "logs":
            print(log_tail(args.name, args.n))
            return 0
        if args.command == "organiser":
            return _cmd_organiser(args.email, args.scope, args.name, args.scope_id)
        if args.command == "roll":
            for name in args.services:
                check_service_name(name)
            rolling.upgrade(args.services or rolling.default_services())
            return 0
    except LauncherError as exc:
        print(f"\n[launcher] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("\n[launcher] interrupted; what this run started has been stopped.", file=sys.stderr)
        return 130
    return 2
