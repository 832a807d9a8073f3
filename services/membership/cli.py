"""Operator commands of the membership service, beside `serve` and `migrate`.

`create-organiser` makes the first organiser account (or any other) and prints the TOTP enrolment and
a one-time link to set the password; `create-api-key` makes a key for an integration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from services.membership import enrolment_qr
from services.membership.accounts import AccountProblem, OrganiserAccounts
from services.membership.address_hashes import AddressHashes
from services.membership.member_requests import MemberRequests
from services.membership.member_rights import MemberRights
from services.membership.ratelimit import RateLimiter
from shared import auth
from shared.cli import ExtraCommand
from shared.config import get_settings
from shared.db import Database
from shared.outbox import Outbox
from shared.uow import UnitsOfWork


def _accounts() -> tuple[OrganiserAccounts, Database]:
    from services.membership import db as tables

    settings = get_settings()
    database = Database(settings.database_url, 2)
    accounts = OrganiserAccounts(
        database,
        Outbox(tables.delivery.outbox),
        secret_key=settings.secret_key,
        public_base_url=settings.public_base_url,
        network_name=settings.network_name,
    )
    return accounts, database


def _create_organiser(args: argparse.Namespace) -> int:
    async def run() -> int:
        accounts, database = _accounts()
        try:
            created = await accounts.create(
                email=args.email, name=args.name or "", scope_type=args.scope, scope_id=args.scope_id
            )
        except AccountProblem as problem:
            for field, message in problem.errors.items():
                print(f"error: {field}: {message}")
            return 2
        finally:
            await database.dispose()
        print(f"organiser id:      {created.organiser_id}")
        print(f"TOTP secret:       {created.totp_secret}")
        print(f"otpauth URI:       {created.otpauth_uri}")
        print(f"set password link: {created.set_password_url}")
        print("Scan this with the authenticator app (or enter the TOTP secret):")
        print(enrolment_qr.terminal(created.otpauth_uri))
        print("Open the link (valid 7 days, once), enter a code from the authenticator app and choose a password.")
        return 0

    return asyncio.run(run())


def _create_api_key(args: argparse.Namespace) -> int:
    async def run() -> int:
        accounts, database = _accounts()
        try:
            key_id, key = await accounts.create_api_key(args.name, args.scope, args.scope_id, None)
        except AccountProblem as problem:
            for field, message in problem.errors.items():
                print(f"error: {field}: {message}")
            return 2
        finally:
            await database.dispose()
        print(f"key id:  {key_id}")
        print(f"OSDI-API-Token: {key}")
        return 0

    return asyncio.run(run())


def _reapply_erasures(args: argparse.Namespace) -> int:
    """After a restore: erase again everyone erased since the backup was taken (deploy/local/backup.py)."""
    from services.membership import db as tables

    member_ids = json.loads(Path(args.file).read_text())

    async def run() -> int:
        settings = get_settings()
        database = Database(settings.database_url, 2)
        uows = UnitsOfWork(database, Outbox(tables.delivery.outbox))
        rights = MemberRights(
            uows, MemberRequests(settings.secret_key, settings.public_base_url), RateLimiter(settings.secret_key)
        )
        try:
            erased = [m for m in member_ids if await rights.erase(m, actor="restore")]
        finally:
            await database.dispose()
        print(f"erased again: {len(erased)} of {len(member_ids)} (the others were already erased or unknown)")
        return 0

    return asyncio.run(run())


def _republish_address_hashes(args: argparse.Namespace) -> int:
    """Publish the address hash of members who joined before MemberJoined carried it (decision 0008); `--all`:
    everyone's again (after SECRET_KEY was changed). The running service relays what this queues."""
    from services.membership import db as tables

    async def run() -> int:
        settings = get_settings()
        database = Database(settings.database_url, 2)
        hashes = AddressHashes(UnitsOfWork(database, Outbox(tables.delivery.outbox)), settings.secret_key)
        try:
            if args.all:
                await hashes.mark_everyone()
            published = await hashes.publish_all()
        finally:
            await database.dispose()
        print(f"address hashes published: {published}")
        return 0

    return asyncio.run(run())


def extra_commands(sub: argparse._SubParsersAction) -> dict[str, ExtraCommand]:
    p = sub.add_parser("create-organiser", help="create an organiser account; prints TOTP enrolment and a link")
    p.add_argument("--email", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--scope", choices=auth.SCOPE_TYPES, default="network")
    p.add_argument("--scope-id", default=None, help="the region's, group's or sub-team's id")
    k = sub.add_parser("create-api-key", help="create an API key (OSDI-API-Token) for an integration")
    k.add_argument("--name", required=True, help="what the key is for")
    k.add_argument("--scope", choices=auth.SCOPE_TYPES, default="network")
    k.add_argument("--scope-id", default=None)
    r = sub.add_parser("reapply-erasures", help="after a restore: erase again the member ids listed in FILE (JSON)")
    r.add_argument("file")
    h = sub.add_parser("republish-address-hashes", help="publish the address hash of members who joined before it")
    h.add_argument("--all", action="store_true", help="every member's again (after SECRET_KEY was changed)")
    return {
        "republish-address-hashes": _republish_address_hashes,
        "create-organiser": _create_organiser,
        "create-api-key": _create_api_key,
        "reapply-erasures": _reapply_erasures,
    }
