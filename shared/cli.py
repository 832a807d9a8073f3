"""`python -m services.<name> [serve|migrate|organiser-token|api-token|…]`: the same entry point for every service.

`organiser-token` and `api-token` print signed tokens (tests, first runs, local experiments); any service's
command does, since every service verifies the same SECRET_KEY's tokens.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from shared.auth import ORGANISER_SESSION, OSDI_API, SCOPE_TYPES, OrganiserScope, issue
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
    commands = {**_token_commands(sub), **(extra(sub) if extra else {})}
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as error:  # e.g. a weak SECRET_KEY: say why, without a traceback
        parser.exit(2, f"{name}: {error}\n")
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
            proxy_headers=False,  # shared/client_address.py believes them, from TRUSTED_PROXIES only
        )
        return 0
    if args.command == "migrate":
        from shared.migrations import upgrade

        upgrade(service_dir, settings.database_url)
        print(f"{name}: migrations applied")
        return 0
    return commands[args.command](args)


def _token_commands(sub: argparse._SubParsersAction) -> dict[str, ExtraCommand]:
    """`organiser-token` and `api-token`: a signed token for a scope, printed (not recorded anywhere)."""
    for name, helptext in (
        ("organiser-token", "print a signed organiser session token (for tests and first runs)"),
        ("api-token", "print an OSDI-API-Token for an integration"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--scope", choices=SCOPE_TYPES, default="network")
        p.add_argument("--scope-id", default=None)
        p.add_argument("--organiser", default=None, help="organiser id (default: a new one)")
    return {"organiser-token": _print_token(ORGANISER_SESSION), "api-token": _print_token(OSDI_API)}


def _print_token(purpose: str) -> ExtraCommand:
    def run(args: argparse.Namespace) -> int:
        scope = OrganiserScope(args.organiser or str(uuid.uuid4()), args.scope, args.scope_id)
        print(issue(get_settings().secret_key, scope, purpose))
        return 0

    return run
