"""Operator commands of the events service, beside `serve` and `migrate`."""

from __future__ import annotations

import argparse
import uuid

from services.events.auth import ORGANISER_SESSION, OSDI_API, OrganiserScope, issue
from shared.cli import ExtraCommand
from shared.config import get_settings


def _token(purpose: str) -> ExtraCommand:
    def run(args: argparse.Namespace) -> int:
        scope = OrganiserScope(args.organiser or str(uuid.uuid4()), args.scope, args.scope_id)
        print(issue(get_settings().secret_key, scope, purpose))
        return 0

    return run


def extra_commands(sub: argparse._SubParsersAction) -> dict[str, ExtraCommand]:
    for name, helptext in (
        ("organiser-token", "print a signed organiser session token (until the shared organiser sign-in exists)"),
        ("api-token", "print an OSDI-API-Token for an integration"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--scope", choices=["network", "region", "group", "subteam"], default="network")
        p.add_argument("--scope-id", default=None)
        p.add_argument("--organiser", default=None, help="organiser id (default: a new one)")
    return {"organiser-token": _token(ORGANISER_SESSION), "api-token": _token(OSDI_API)}
