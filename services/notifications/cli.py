"""Notifications' commands for `python -m services.notifications`: `send-digests [--now]` and `send-follow-ups`,
run against the service's database (the running service emails what they queue)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from services.notifications import db as tables
from services.notifications.main import digests_and_follow_ups
from services.notifications.service import NotificationService
from shared.config import get_settings
from shared.db import Database
from shared.outbox import Outbox
from shared.uow import UnitsOfWork

T = TypeVar("T")


def commands(sub: Any) -> dict[str, Any]:
    """Add the commands' parsers to `sub`; their functions by name."""
    digest_parser = sub.add_parser("send-digests", help="build the digests that are due (--now: everyone's, now)")
    digest_parser.add_argument("--now", action="store_true", help="every organiser's digest now, whatever its schedule")
    digest_parser.add_argument("--organiser", help="only this organiser's (with --now)")
    sub.add_parser("send-follow-ups", help="queue the follow-up emails that are due")
    return {"send-digests": send_digests, "send-follow-ups": send_follow_ups}


async def _with_service(run: Callable[[NotificationService], Awaitable[T]]) -> T:
    settings = get_settings()
    db = Database(settings.database_url, pool_size=2)
    try:
        return await run(NotificationService(UnitsOfWork(db, Outbox(tables.delivery.outbox)), settings))
    finally:
        await db.dispose()


def send_digests(args: Any) -> int:
    async def run(notifications: NotificationService) -> int:
        _, digests, _ = digests_and_follow_ups(notifications)
        if args.now:
            return await digests.run_now(organiser_id=args.organiser)
        return await digests.run_due()

    built = asyncio.run(_with_service(run))
    print(f"{built} digest(s) built; the running service emails them")
    return 0


def send_follow_ups(args: Any) -> int:
    async def run(notifications: NotificationService) -> dict[str, int]:
        _, _, follow_ups = digests_and_follow_ups(notifications)
        return await follow_ups.run_due()

    outcome = asyncio.run(_with_service(run))
    print(", ".join(f"{n} {what}" for what, n in outcome.items()) + "; the running service emails them")
    return 0
