"""`python -m services.<name> [serve|migrate|…]`: the same entry point for every service."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from shared.config import get_settings

ExtraCommand = Callable[[argparse.Namespace], int]


def service_main(
    name: str,
    service_dir: Path,
    app_path: str,
    argv: list[str] | None = None,
    extra: Callable[[argparse._SubParsersAction], dict[str, ExtraCommand]] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP API and the Kafka consumers (default)")
    sub.add_parser("migrate", help="apply the Alembic migrations to the service's database")
    commands = extra(sub) if extra else {}
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command in (None, "serve"):
        import uvicorn

        from shared.logging import configure_logging

        # Before uvicorn starts, so an error while importing or starting the app reaches the log too.
        configure_logging(settings.service_instance, settings.log_level, settings.log_json)

        uvicorn.run(
            app_path,
            factory=True,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
        )
        return 0
    if args.command == "migrate":
        from shared.migrations import upgrade

        upgrade(service_dir, settings.database_url)
        print(f"{name}: migrations applied")
        return 0
    return commands[args.command](args)
