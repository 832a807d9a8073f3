"""Runs all of Groundswell on one machine without Docker: Kafka, PostgreSQL, an SMTP catcher, the
four services and an nginx gateway, as ordinary processes whose state lives in `.run/`.

CLI: ``python -m deploy.local.launcher {run,up,down,stop,status,infra,...}`` (see ``--help``; cli.py).
Library: tests, benchmarks and the demo import this module (``from deploy.local import launcher``) to
start, stop and kill parts of the running system (``ensure_up``, ``stop_kafka``, ``restart_postgres``,
``kill_service`` ...); the work is done in the modules beside it, one concern each:

    config     where the state lives, ports and addresses (GROUNDSWELL_STATE_DIR, GROUNDSWELL_PORT_OFFSET)
    processes  pid files and records, starting and stopping a process tree, one-off steps, the lock
    probes     ports checked before a start, readiness polled after it
    kafka      the KRaft node: jars via Maven, configuration, storage format, topics
    postgres   the private cluster, one database per service
    catcher    the SMTP catcher's process (the catcher itself: smtp_catcher.py)
    gateway    nginx and its configuration, rendered from ROUTES
    services   the four services and their extra instances, migrations
    stack      the whole system: ensure_up, stop_all, status
    cli        the command line

Decisions: docs/decisions/0001-local-launcher-without-docker.md; operator guide: docs/operations.md.
"""

from __future__ import annotations

from deploy.local.catcher import start_smtp_catcher, stop_smtp_catcher
from deploy.local.cli import main
from deploy.local.config import (
    BOUNCE_SMTP_PORT,
    GATEWAY_PORT,
    GATEWAY_URL,
    HOST,
    KAFKA_BOOTSTRAP,
    KAFKA_EXTERNAL,
    KAFKA_PORT,
    LOG_DIR,
    MAIL_DIR,
    NGINX_DIR,
    PG_PORT,
    PID_DIR,
    PORT_OFFSET,
    POSTGRES_EXTERNAL,
    PUBLIC_BASE_URL,
    REPO_ROOT,
    SERVICE_PORTS,
    SERVICES,
    SMTP_CATCHER_HTTP_PORT,
    SMTP_CATCHER_SMTP_PORT,
    SMTP_CATCHER_URL,
    STATE_DIR,
    LauncherError,
    secret_key,
)
from deploy.local.gateway import (
    NESTED_ROUTES,
    ROUTES,
    nginx_binary,
    reload_gateway,
    render_nginx_conf,
    start_gateway,
    stop_gateway,
)
from deploy.local.kafka import create_topics, kafka_ready, kafka_tool_command, start_kafka, stop_kafka
from deploy.local.postgres import database_url, ensure_databases, restart_postgres, start_postgres, stop_postgres
from deploy.local.probes import check_ports, free_port, http_status, port_in_use, wait_http
from deploy.local.processes import ManagedProcess, ProcessRecord, log_path, log_tail, read_record, stop_process
from deploy.local.services import (
    extra_instances,
    instance_ports,
    kill_service,
    migrate_service,
    migrate_services,
    service_env,
    service_instances,
    service_ready,
    service_url,
    start_service,
    stop_service,
)
from deploy.local.stack import ensure_up, status, stop_all

__all__ = [
    "GATEWAY_PORT",
    "GATEWAY_URL",
    "HOST",
    "KAFKA_BOOTSTRAP",
    "KAFKA_EXTERNAL",
    "KAFKA_PORT",
    "LOG_DIR",
    "MAIL_DIR",
    "NESTED_ROUTES",
    "NGINX_DIR",
    "PG_PORT",
    "PID_DIR",
    "PORT_OFFSET",
    "POSTGRES_EXTERNAL",
    "PUBLIC_BASE_URL",
    "REPO_ROOT",
    "ROUTES",
    "SERVICES",
    "SERVICE_PORTS",
    "SMTP_CATCHER_HTTP_PORT",
    "SMTP_CATCHER_SMTP_PORT",
    "SMTP_CATCHER_URL",
    "STATE_DIR",
    "BOUNCE_SMTP_PORT",
    "LauncherError",
    "ManagedProcess",
    "ProcessRecord",
    "check_ports",
    "create_topics",
    "database_url",
    "ensure_databases",
    "ensure_up",
    "extra_instances",
    "free_port",
    "http_status",
    "instance_ports",
    "kafka_ready",
    "kafka_tool_command",
    "kill_service",
    "log_path",
    "log_tail",
    "main",
    "migrate_service",
    "migrate_services",
    "nginx_binary",
    "port_in_use",
    "read_record",
    "reload_gateway",
    "render_nginx_conf",
    "restart_postgres",
    "secret_key",
    "service_env",
    "service_instances",
    "service_ready",
    "service_url",
    "start_gateway",
    "start_kafka",
    "start_postgres",
    "start_service",
    "start_smtp_catcher",
    "status",
    "stop_all",
    "stop_gateway",
    "stop_kafka",
    "stop_postgres",
    "stop_process",
    "stop_service",
    "stop_smtp_catcher",
    "wait_http",
]

if __name__ == "__main__":
    raise SystemExit(main())
