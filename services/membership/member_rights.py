"""Members' rights over their record after joining: their view of it and their choices (preferences), one-click
unsubscribe, leaving, erasure, a download of everything held about them, and the changes an integration may make
on their behalf. Each is one unit of work that writes state and the events it raises together.

A download or an erasure asked for through a preferences link (long-lived, forwarded, left in a browser's history)
first asks the member to confirm through a fresh link emailed to them (`ask_to_confirm`, decision 0006).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership import queries
from services.membership.domain import OWNER, Preferences, display_name, given_and_family, place
from services.membership.joins import MemberNotFound, utcnow
from services.membership.member_requests import MemberRequest, MemberRequests, RequestNotValid
from services.membership.ratelimit import MEMBER_REQUEST_PER_IP, MEMBER_REQUEST_PER_MEMBER, Attempt, RateLimiter
from shared import topics
from shared.crypto import KeyStore
from shared.events.catalog import (
    ConsentChanged,
    EngagementLevelChosen,
    MemberErased,
    MemberLeft,
    MemberProfileUpdated,
)
from shared.events.envelope import EventData
from shared.uow import UnitOfWork, UnitsOfWork


class TooManyRequests(Exception):
    """A member's link asked for downloads or erasures more often than the rate limits allow: nothing was sent."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s


class MemberRights:
    def __init__(self, uows: UnitsOfWork, requests: MemberRequests, limiter: RateLimiter) -> None:
        self.uows = uows
        self.keys = KeyStore(tables.subject_keys, OWNER)
        self.requests = requests
        self.limiter = limiter

    # confirming a download or an erasure by email --------------------------------------------------------
    async def ask_to_confirm(self, member_id: str, action: str, ip: str | None = None) -> None:
        """Record a download or an erasure to confirm and email the member a short-lived link to it (a newer
        request replaces an older one of the same kind). Each ask emails the member, so asks are limited per member
        and per connection (`ip`): over either limit nothing is recorded or sent (`TooManyRequests`)."""
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._member_for_update(session, member_id)
            attempts = [Attempt(MEMBER_REQUEST_PER_MEMBER, member_id)]
            if ip is not None:
                attempts.append(Attempt(MEMBER_REQUEST_PER_IP, ip, ip))
            refused = [verdict for verdict in await self.limiter.count(session, attempts) if not verdict.allowed]
            if refused:
                raise TooManyRequests(max(verdict.retry_after_s for verdict in refused))
            await uow.emit(await self.requests.record(session, row, action, utcnow()))

    async def requested(self, token: str, *, use: bool = False) -> MemberRequest:
        """The download or erasure a confirmation link names, if it still stands; `use`: it is used up now (the
        caller then does what it asked, in its own transaction)."""
        async with self.uows.begin() as uow:
            request = await self.requests.find(uow.session, token, ("download", "erase"), utcnow(), lock=use)
            member = await queries.member_row(uow.session, request.member_id)
            if member.status == "erased":
                raise RequestNotValid()
            if use:
                await self.requests.used(uow.session, request)
            return request

    async def _member_for_update(self, session: AsyncSession, member_id: str, *, allow_left: bool = True) -> Any:
        row = await queries.lock_member(session, member_id)
        if row is None or row.status == "erased" or (row.status == "left" and not allow_left):
            raise MemberNotFound(member_id)
        return row

    async def member_view(self, member_id: str) -> dict[str, Any]:
        """What the preferences page shows a member about themselves."""
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._member_for_update(session, member_id)
            group_ids, subteam_ids = await queries.units_of(session, member_id)
        return {"member": row, "group_ids": group_ids, "subteam_ids": subteam_ids}

    async def update_preferences(self, member_id: str, chosen: Preferences, *, source: str = "preferences") -> None:
        """Replace a member's choices; announce what changed (consent, level, profile), nothing if nothing did."""
        m = tables.members
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._member_for_update(session, member_id, allow_left=False)
            old_groups, old_subteams = await queries.units_of(session, member_id)
            now = utcnow()
            await session.execute(
                update(m)
                .where(m.c.id == member_id)
                .values(
                    email_consent=chosen.email_consent,
                    email_topics=chosen.email_topics,
                    engagement_level=chosen.engagement_level,
                    interests=chosen.interests,
                    updated_at=now,
                )
            )
            mg, ms = tables.member_groups, tables.member_subteams
            await session.execute(
                mg.delete().where(mg.c.member_id == member_id, mg.c.group_id.not_in(chosen.group_ids or [""]))
            )
            await session.execute(
                ms.delete().where(ms.c.member_id == member_id, ms.c.subteam_id.not_in(chosen.subteam_ids or [""]))
            )
            await queries.add_units(session, member_id, chosen.group_ids, chosen.subteam_ids)
            new_groups, new_subteams = await queries.units_of(session, member_id)
            events: list[EventData] = []
            if row.email_consent != chosen.email_consent or (
                chosen.email_consent and (row.email_topics != chosen.email_topics)
            ):
                events.append(
                    await self._consent_event(session, member_id, chosen.email_consent, source, chosen.email_topics)
                )
            changed = [
                name
                for name, old, new in (
                    ("group_ids", sorted(old_groups), sorted(new_groups)),
                    ("subteam_ids", sorted(old_subteams), sorted(new_subteams)),
                    ("interests", list(row.interests), chosen.interests),
                    ("engagement_level", row.engagement_level, chosen.engagement_level),
                )
                if old != new
            ]
            if changed:
                events.append(
                    MemberProfileUpdated(
                        member_id=member_id,
                        changed=changed,
                        region_id=row.region_id,
                        group_ids=new_groups,
                        subteam_ids=new_subteams,
                        interests=chosen.interests,
                        engagement_level=chosen.engagement_level,
                        organisation_id=row.organisation_id,
                    )
                )
            if row.engagement_level != chosen.engagement_level:
                events.append(
                    EngagementLevelChosen(
                        member_id=member_id, level=chosen.engagement_level, previous_level=row.engagement_level
                    )
                )
            await uow.emit_all(events)

    async def _consent_event(
        self, session: AsyncSession, member_id: str, granted: bool, source: str, topics: list[str] | None = None
    ) -> ConsentChanged:
        """A consent change, also kept as proof (a consent record) with the wording in force."""
        options = await queries.load_join_options(session)
        await queries.insert_consent_records(
            session,
            {
                "id": str(uuid.uuid4()),
                "member_id": member_id,
                "channel": "email",
                "granted": granted,
                "wording_version": options.consent_version,
                "source": source,
                "recorded_at": utcnow(),
            },
        )
        return ConsentChanged(
            member_id=member_id,
            granted=granted,
            wording_version=options.consent_version if granted else None,
            source=source,
            topics=list(topics or []) if granted else [],
        )

    async def unsubscribe(self, member_id: str, *, source: str) -> bool:
        """Withdraw email consent (one click); True if it was given until now."""
        m = tables.members
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._member_for_update(session, member_id)
            if not row.email_consent:
                return False
            await session.execute(update(m).where(m.c.id == member_id).values(email_consent=False, updated_at=utcnow()))
            await uow.emit(await self._consent_event(session, member_id, False, source))
            return True

    async def leave(self, member_id: str, reason: str | None = None) -> bool:
        """Leave the network: no more email, roles end, others forget them; the record stays until erasure."""
        m = tables.members
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._member_for_update(session, member_id)
            if row.status == "left":
                return False
            now = utcnow()
            await session.execute(
                update(m)
                .where(m.c.id == member_id)
                .values(status="left", left_at=now, email_consent=False, updated_at=now)
            )
            g = tables.role_grants
            await session.execute(
                update(g).where(g.c.member_id == member_id, g.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            said = (reason or "").strip()[:500]
            # Free text a person wrote: sealed with their key like their other personal fields (the topic is kept
            # forever; erasure shreds the key), never in clear (`reason` stays empty).
            sealed = await self.keys.seal(session, member_id, said) if said else None
            await uow.emit(MemberLeft(member_id=member_id, sealed_reason=sealed))
            return True

    async def erase(self, member_id: str, *, actor: str) -> bool:
        """Erase a member: personal data deleted here (the row keeps only its id and dates), their key destroyed
        with a tombstone on the key topic, and MemberErased so every other service deletes its copies."""
        m = tables.members
        async with self.uows.begin() as uow:
            session = uow.session
            row = await queries.lock_member(session, member_id)
            if row is None or row.status == "erased":
                return False
            now = utcnow()
            await session.execute(
                update(m)
                .where(m.c.id == member_id)
                .values(
                    email_normalised=None,
                    name="",
                    given_name=None,
                    family_name=None,
                    phone_number=None,
                    custom_fields={},
                    postcode=None,
                    region_id=None,
                    suggested_group_id=None,
                    engagement_level="",
                    interests=[],
                    skills=None,
                    time_available=None,
                    organisation_id=None,
                    organisation_name=None,
                    email_consent=False,
                    email_topics=None,
                    source="erased",
                    status="erased",
                    erased_at=now,
                    updated_at=now,
                )
            )
            for table in (
                tables.member_groups,
                tables.member_subteams,
                tables.consent_records,
                tables.role_grants,
                tables.taggings,
                tables.member_requests,
                tables.join_followups,
                tables.member_data_requests,  # and, cascading, each service's part of a download
            ):
                await session.execute(delete(table).where(table.c.member_id == member_id))
            await session.execute(
                insert(tables.audit_log).values(actor=actor, action="member.erased", member_id=member_id, detail={})
            )
            await uow.emit(MemberErased(member_id=member_id, erased_at=now))
            await self.keys.shred(session, [member_id], uow.outbox, topics.MEMBERSHIP_SUBJECT_KEYS)
            return True

    async def everything_about(self, member_id: str) -> dict[str, Any]:
        """Everything held about a member, for them to download (the right of access); audited."""
        c, g, a = tables.consent_records, tables.role_grants, tables.audit_log
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._member_for_update(session, member_id)
            names: dict[str, str] = {}
            for table in (tables.regions, tables.local_groups, tables.subteams, tables.partner_organisations):
                names.update({r.id: r.name for r in (await session.execute(select(table.c.id, table.c.name))).all()})
            group_ids, subteam_ids = await queries.units_of(session, member_id)
            consents = await session.execute(select(c).where(c.c.member_id == member_id).order_by(c.c.recorded_at))
            roles = await session.execute(select(g).where(g.c.member_id == member_id).order_by(g.c.granted_at))
            views = await session.execute(select(a).where(a.c.member_id == member_id).order_by(a.c.id))
            r = tables.member_requests
            waiting = await session.execute(
                select(r.c.kind, r.c.requested_at, r.c.expires_at)
                .where(r.c.member_id == member_id, r.c.expires_at > utcnow())
                .order_by(r.c.requested_at)
            )
            await session.execute(
                insert(a).values(actor=f"member:{member_id}", action="member.download", member_id=member_id, detail={})
            )

            def when(value: datetime | None) -> str | None:
                return value.isoformat() if value else None

            return {
                "about": "Everything the network's membership records hold about you.",
                "member": {
                    "id": row.id,
                    "name": row.name,
                    "given_name": row.given_name,
                    "family_name": row.family_name,
                    "email": row.email_normalised,
                    "phone_number": row.phone_number,
                    "custom_fields": dict(row.custom_fields),
                    "postcode": row.postcode,
                    "region": names.get(row.region_id or ""),
                    "nearest_group": names.get(row.suggested_group_id or ""),
                    "local_groups": [names.get(x, x) for x in group_ids],
                    "subteams": [names.get(x, x) for x in subteam_ids],
                    "interests": list(row.interests),
                    "engagement_level": row.engagement_level,
                    "skills": row.skills,
                    "time_available": row.time_available,
                    "organisation": names.get(row.organisation_id or "") or row.organisation_name,
                    "status": row.status,
                    "email_consent": row.email_consent,
                    "email_topics": row.email_topics,
                    "source": row.source,
                    "joined_at": when(row.joined_at),
                    "confirmed_at": when(row.confirmed_at),
                    "left_at": when(row.left_at),
                    "updated_at": when(row.updated_at),
                },
                "consent_records": [
                    {
                        "recorded_at": when(r.recorded_at),
                        "channel": r.channel,
                        "granted": r.granted,
                        "wording_version": r.wording_version,
                        "privacy_notice_version": r.privacy_version,
                        "source": r.source,
                        "site": r.site,
                        "ip_address": "kept only as a keyed hash" if r.ip_hash else None,
                    }
                    for r in consents.all()
                ],
                "roles": [
                    {
                        "role": r.role,
                        "scope_type": r.scope_type,
                        "scope": names.get(r.scope_id or "", r.scope_id),
                        "granted_at": when(r.granted_at),
                        "ended_at": when(r.revoked_at),
                    }
                    for r in roles.all()
                ],
                "waiting_for_you_to_confirm": [
                    {"what": w.kind, "asked_at": when(w.requested_at), "until": when(w.expires_at)}
                    for w in waiting.all()
                ],
                "who_looked_at_your_record": [
                    {"at": when(r.at), "who": r.actor, "what": r.action} for r in views.all()
                ],
            }

    # integrations, on a member's behalf --------------------------------------------------------------
    async def update_person(
        self,
        uow: UnitOfWork,
        member_id: str,
        *,
        given_name: str | None = None,
        family_name: str | None = None,
        postcode: str | None = None,
        email_consent: bool | None = None,
        phone_number: str | None = None,
        custom_fields: dict[str, Any] | None = None,
        source: str,
    ) -> None:
        """Change what an integration may change (names, postcode, email consent, phone number, its custom
        fields); what is not sent (None) stays; announce what changed that other services hold."""
        m = tables.members
        session = uow.session
        row = await self._member_for_update(session, member_id, allow_left=False)
        values: dict[str, Any] = {}
        events: list[EventData] = []
        changed: list[str] = []
        old_given, old_family = given_and_family(row.name, row.given_name, row.family_name)
        given = old_given if given_name is None else given_name
        family = old_family if family_name is None else family_name
        if (given, family) != (row.given_name, row.family_name) and (given_name, family_name) != (None, None):
            values.update(given_name=given, family_name=family)
        name = display_name(given, family)
        if name != row.name and (given_name, family_name) != (None, None):
            values["name"] = name
            changed.append("name")
        if phone_number is not None and phone_number != row.phone_number:
            values["phone_number"] = phone_number or None
        if custom_fields:
            merged = {k: v for k, v in {**row.custom_fields, **custom_fields}.items() if v is not None}
            if merged != row.custom_fields:
                values["custom_fields"] = merged
        if postcode and postcode != row.postcode:
            options = await queries.load_join_options(session)
            region_id, nearest = place(postcode, options.postcode_prefixes)
            values.update(postcode=postcode, region_id=region_id, suggested_group_id=nearest)
            changed.append("postcode")
            if region_id != row.region_id:
                changed.append("region_id")
        if email_consent is not None and email_consent != row.email_consent:
            values["email_consent"] = email_consent
            events.append(await self._consent_event(session, member_id, email_consent, source))
        if not values:
            return
        await session.execute(update(m).where(m.c.id == member_id).values(updated_at=utcnow(), **values))
        if changed:
            group_ids, subteam_ids = await queries.units_of(session, member_id)
            events.insert(
                0,
                MemberProfileUpdated(
                    member_id=member_id,
                    changed=changed,
                    name=await self.keys.seal(session, member_id, name) if "name" in changed and name else None,
                    region_id=values.get("region_id", row.region_id),
                    group_ids=group_ids,
                    subteam_ids=subteam_ids,
                    interests=list(row.interests),
                    engagement_level=row.engagement_level,
                    organisation_id=row.organisation_id,
                ),
            )
        await uow.emit_all(events)
