"""The short join's thank-you page: next steps near the person (their local group, meetings near them, a campaign
to act on) and "tell us more" (interests, groups, sub-teams, skills, time, organisation) without typing their
address again.

The answer to a join says nothing about what it did (the same 303 for a new address, a member's address, a limited
one and a bot: decision 0006), so the thank-you page cannot learn it from the answer. Instead the join form's page
gives the browser a random cookie before anything is typed; the join records under a keyed hash of it the member
it created, or the request it recorded for a member's address, and where the postcode typed places them. The
thank-you page reads that back and shows only what the person typed placed them (never anything stored about a
member), so it looks and behaves the same whatever the address. What they tell us more goes into a record at once
only while that record is still the joiner's own unconfirmed word (a member the join created, nobody having
confirmed the address since); otherwise it joins the request the address's owner confirms by email (decision 0011).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.membership import db as tables
from services.membership import queries
from services.membership.domain import (
    JOIN_CHANGE,
    TELL_BY_EMAIL,
    TELL_DIRECTLY,
    JoinApplication,
    JoinExtras,
    extras_join,
    tell_more_route,
    with_extras,
)
from services.membership.joins import JoinOutcome, Joins
from shared.uow import UnitsOfWork

COOKIE = "gs_join"  # the browser's random key, given by the join form's page
COOKIE_PATH = "/join"
LIFETIME = timedelta(hours=24)  # how long after a join its thank-you page offers "tell us more"
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
MEETINGS_SHOWN = 3


@dataclass(frozen=True)
class Followup:
    """What a join from this browser made, as its thank-you page may know it: where the postcode typed places the
    person, and whether "tell us more" is still open. Nothing here tells a member's address from a new one."""

    region_id: str | None
    group_id: str | None
    open: bool


@dataclass(frozen=True)
class NextSteps:
    """What the thank-you page suggests: their local group and region by name, meetings near them, a campaign."""

    group: Any  # a Unit, or None
    region: Any
    meetings: list[Any]  # rows of public_meetings
    campaign: Any  # a row of public_campaigns, or None


def new_key() -> str:
    return secrets.token_urlsafe(32)


def usable_key(key: str | None) -> str | None:
    """The cookie's key if it has the shape we give (anything else is as if there were none)."""
    return key if key and KEY_RE.match(key) else None


class JoinFollowups:
    def __init__(self, uows: UnitsOfWork, joins: Joins, secret_key: str) -> None:
        self.uows = uows
        self.joins = joins
        self.secret_key = secret_key

    def _hash(self, key: str) -> str:
        return hmac.new(self.secret_key.encode(), f"join-followup:{key}".encode(), hashlib.sha256).hexdigest()

    async def remember(self, key: str, application: JoinApplication | None, outcome: JoinOutcome | None) -> None:
        """After an accepted join from the browser holding `key`: what it made (nothing, for a join the per-email
        limit stopped or a bot), replacing an earlier join's from the same browser."""
        now = datetime.now(UTC)
        values = {
            "member_id": outcome.member_id if outcome else None,
            "request_id": outcome.request_id if outcome else None,
            "new_member": bool(outcome and outcome.new_member),
            "region_id": application.region_id if application else None,
            "group_id": application.suggested_group_id if application else None,
            "created_at": now,
            "expires_at": now + LIFETIME,
            "used_at": None,
        }
        f = tables.join_followups
        async with self.uows.begin() as uow:
            await uow.session.execute(
                pg_insert(f)
                .values(key_hash=self._hash(key), **values)
                .on_conflict_do_update(index_elements=[f.c.key_hash], set_=values)
            )

    async def find(self, key: str | None) -> Followup | None:
        """The latest join from the browser holding `key`, if it is recent."""
        if key is None:
            return None
        f = tables.join_followups
        async with self.uows.begin() as uow:
            row = (
                await uow.session.execute(
                    select(f.c.region_id, f.c.group_id, f.c.used_at).where(
                        f.c.key_hash == self._hash(key), f.c.expires_at > datetime.now(UTC)
                    )
                )
            ).first()
        return Followup(row.region_id, row.group_id, row.used_at is None) if row else None

    async def tell_more(self, key: str | None, extras: JoinExtras) -> bool:
        """"Tell us more" from the thank-you page, taken once: into the record of the member the join created while
        it is still only the joiner's word, otherwise into a join for the member to confirm by email (the request
        the join recorded, with this added, or a new one: either way a fresh link is emailed and the older one
        leads nowhere). False when there is nothing to tell it to (no recent join from this browser, or told
        already); True otherwise, whatever became of it."""
        if key is None:
            return False
        f = tables.join_followups
        now = datetime.now(UTC)
        async with self.uows.begin() as uow:
            session = uow.session
            row = (
                await session.execute(
                    select(f)
                    .where(f.c.key_hash == self._hash(key), f.c.expires_at > now, f.c.used_at.is_(None))
                    .with_for_update()
                )
            ).first()
            if row is None:
                return False
            await session.execute(update(f).where(f.c.key_hash == row.key_hash).values(used_at=now))
            if row.member_id is None or not extras.anything:
                return True
            member = await queries.lock_member(session, row.member_id)
            route = tell_more_route(
                new_member=row.new_member,
                status=member.status if member else None,
                confirmed_at=member.confirmed_at if member else None,
                since=row.created_at,
            )
            consent_version = (await self.joins.options()).consent_version
            if route == TELL_DIRECTLY:
                application = extras_join(member, extras, consent_version=consent_version)
                await uow.emit(*await self.joins.apply_join(uow, member, application, None))
            elif route == TELL_BY_EMAIL:
                request = None
                if row.request_id:
                    request = await self.joins.requests.standing(session, row.request_id, member.id, JOIN_CHANGE, now)
                if request is not None:
                    application = with_extras(await self.joins.waiting_join(session, request, member), extras)
                else:
                    application = extras_join(member, extras, consent_version=consent_version)
                ip_hash = request.ip_hash if request else None
                await uow.emit(await self.joins.ask_to_confirm(session, member, application, ip_hash))
            return True

    async def next_steps(self, followup: Followup | None) -> NextSteps:
        """Their local group and region, the next meetings for the whole network, their region or a group in it,
        and the newest live campaign. Without a join to go by: meetings for the whole network."""
        options = await self.joins.options()
        region_id = followup.region_id if followup else None
        group_id = followup.group_id if followup else None
        pm, pc = tables.public_meetings, tables.public_campaigns
        near = [pm.c.scope_type == "network"]
        if region_id:
            groups = [g.id for g in options.groups if g.parent_id == region_id]
            near.append(and_(pm.c.scope_type == "region", pm.c.scope_id == region_id))
            near.append(and_(pm.c.scope_type == "group", pm.c.scope_id.in_([*groups, group_id or ""])))
        async with self.uows.begin() as uow:
            session = uow.session
            meetings = await session.execute(
                select(pm)
                .where(~pm.c.cancelled, pm.c.starts_at >= datetime.now(UTC), or_(*near))
                .order_by(pm.c.starts_at, pm.c.title)
                .limit(MEETINGS_SHOWN)
            )
            campaign = await session.execute(
                select(pc).where(pc.c.closed_at.is_(None)).order_by(pc.c.launched_at.desc()).limit(1)
            )
            return NextSteps(
                group=options.resolve(options.groups, group_id) if group_id else None,
                region=options.resolve(options.regions, region_id) if region_id else None,
                meetings=list(meetings.all()),
                campaign=campaign.first(),
            )
