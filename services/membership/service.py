"""Membership's use cases for members: each is one transaction that writes state and its outbox rows together."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership.domain import (
    Choice,
    JoinApplication,
    JoinOptions,
    Preferences,
    Unit,
    merged,
    origin_of,
    place,
)
from services.membership.ratelimit import JOIN_PER_EMAIL, JOIN_PER_IP, Attempt, RateLimiter, Verdict
from shared import topics
from shared.cache import Expiring
from shared.contact import collapse_spaces
from shared.crypto import KeyStore, encode_key, new_key, seal
from shared.db import Database
from shared.events.catalog import (
    ConsentChanged,
    EngagementLevelChosen,
    MemberConfirmed,
    MemberErased,
    MemberJoined,
    MemberLeft,
    MemberProfileUpdated,
    SubjectKeyIssued,
)
from shared.events.envelope import Envelope, EventData
from shared.logging import correlation_id_var
from shared.outbox import Outbox

OWNER = "membership"
JOIN_OPTIONS_TTL_S = 5.0  # other instances see an organiser's change to the join form within this


@dataclass(frozen=True)
class PendingJoin:
    """A valid join form waiting to be stored: from `ip`, in the request `correlation_id`."""

    application: JoinApplication
    ip: str
    correlation_id: str | None = None


@dataclass(frozen=True)
class JoinSubmission:
    """What became of a join form's submission: refused for its address, or accepted (and stored unless the
    per-email limit stopped it, which the person is never told)."""

    address_allowed: bool
    outcome: JoinOutcome | None = None


@dataclass(frozen=True)
class JoinOutcome:
    member_id: str
    new_member: bool


class MemberNotFound(LookupError):
    """No member with that id (or they were erased)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


# Built once: executed with parameters, SQLAlchemy compiles each of them once per process.
_INSERT_MEMBER = (  # with several rows: one INSERT … VALUES of them all (SQLAlchemy's "insertmanyvalues")
    pg_insert(tables.members)
    .on_conflict_do_nothing(index_elements=[tables.members.c.email_normalised])
    .returning(tables.members.c.id)
)
_INSERT_MEMBER_GROUP = pg_insert(tables.member_groups).on_conflict_do_nothing()
_INSERT_MEMBER_SUBTEAM = pg_insert(tables.member_subteams).on_conflict_do_nothing()


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


async def load_join_options(session: AsyncSession) -> JoinOptions:
    """The join form's choices as organisers configured them."""
    i, lv, cw = tables.interests, tables.engagement_levels, tables.consent_wordings
    interests = (await session.execute(select(i.c.key, i.c.label).where(i.c.active).order_by(i.c.position))).all()
    levels = (await session.execute(select(lv.c.key, lv.c.label).where(lv.c.active).order_by(lv.c.position))).all()
    wordings = (
        await session.execute(
            select(cw.c.version, cw.c.wording, cw.c.retired_at)
            .where(cw.c.channel == "email")
            .order_by(cw.c.introduced_at, cw.c.version)
        )
    ).all()
    current = [w for w in wordings if w.retired_at is None] or list(wordings)
    r, g, s, p = tables.regions, tables.local_groups, tables.subteams, tables.partner_organisations
    regions = (await session.execute(select(r.c.id, r.c.slug, r.c.name).order_by(r.c.name))).all()
    groups = (await session.execute(select(g.c.id, g.c.slug, g.c.name, g.c.region_id).order_by(g.c.name))).all()
    subteams = (await session.execute(select(s.c.id, s.c.slug, s.c.name).order_by(s.c.name))).all()
    partners = (await session.execute(select(p.c.id, p.c.slug, p.c.name).order_by(p.c.name))).all()
    pd = tables.postcode_districts
    prefixes = {row.prefix: (row.region_id, row.group_id) for row in (await session.execute(select(pd))).all()}
    return JoinOptions(
        interests=tuple(Choice(x.key, x.label) for x in interests),
        levels=tuple(Choice(x.key, x.label) for x in levels),
        regions=tuple(Unit(x.id, x.slug, x.name) for x in regions),
        groups=tuple(Unit(x.id, x.slug, x.name, x.region_id) for x in groups),
        subteams=tuple(Unit(x.id, x.slug, x.name) for x in subteams),
        partners=tuple(Unit(x.id, x.slug, x.name) for x in partners),
        consent_version=current[-1].version if current else "",
        consent_wording=current[-1].wording if current else "",
        consent_versions=frozenset(w.version for w in wordings),
        postcode_prefixes=prefixes,
    )


class MembershipService:
    def __init__(self, db: Database, outbox: Outbox, secret_key: str, double_opt_in: bool = True) -> None:
        self.db = db
        self.outbox = outbox
        self.keys = KeyStore(tables.subject_keys, OWNER)
        self.secret_key = secret_key
        self.double_opt_in = double_opt_in
        self.limiter = RateLimiter(secret_key)
        self._join_options = Expiring(self._load_join_options, JOIN_OPTIONS_TTL_S)

    def hash_ip(self, ip: str) -> str:
        """Proof of where consent came from, without keeping the address itself."""
        return hmac.new(self.secret_key.encode(), ip.encode(), hashlib.sha256).hexdigest()

    async def _emit(self, session: AsyncSession, events: list[EventData]) -> None:
        await self.outbox.add_events(session, events, correlation_id=correlation_id_var.get())

    async def join_options(self) -> JoinOptions:
        """The join form's choices, read from their tables at most every few seconds."""
        return await self._join_options.get()

    async def _load_join_options(self) -> JoinOptions:
        async with self.db.transaction() as session:
            return await load_join_options(session)

    def forget_join_options(self) -> None:
        """After a change to regions, groups, sub-teams, partners or the form's wording: read them again."""
        self._join_options.forget()

    # spam protection -----------------------------------------------------------------------------
    async def allow_join_from(self, ip: str) -> Verdict:
        async with self.db.transaction() as session:
            return await self.limiter.hit(session, JOIN_PER_IP, ip, ip=ip)

    async def submit_joins(self, pending: Sequence[PendingJoin]) -> list[JoinSubmission]:
        """Valid join forms in one transaction, with exactly the effects of submitting them one after another
        in this order (see `JoinBatcher`): both limits counted in one statement, new members written with one
        statement per table, anyone already a member (or twice in the batch) updated as a join again.

        One refused for its address changes nothing but the counters. One over the per-email limit is counted
        and stores nothing, and the caller answers as if it were accepted.
        """
        async with self.db.transaction() as session:
            attempts = []
            for join in pending:
                attempts += [
                    Attempt(JOIN_PER_IP, join.ip, join.ip),
                    Attempt(JOIN_PER_EMAIL, join.application.email_normalised, join.ip),
                ]
            verdicts = await self.limiter.count(session, attempts)
            results: list[JoinSubmission | None] = [None] * len(pending)
            first_of_email: dict[str, int] = {}
            again: list[int] = []
            for i, join in enumerate(pending):
                by_ip, by_email = verdicts[2 * i], verdicts[2 * i + 1]
                if not by_ip.allowed:
                    results[i] = JoinSubmission(False)
                elif not by_email.allowed:
                    results[i] = JoinSubmission(True)
                elif first_of_email.setdefault(join.application.email_normalised, i) != i:
                    again.append(i)  # the same address earlier in this batch: a join again, after that one
            firsts = [(i, pending[i]) for i in first_of_email.values()]
            created = await self._insert_new_members(
                session, [(i, p.application, p.ip, p.correlation_id) for i, p in firsts]
            )
            for i in first_of_email.values():
                if i in created:
                    results[i] = JoinSubmission(True, JoinOutcome(created[i], True))
                else:
                    again.append(i)  # already a member
            for i in sorted(again):
                join = pending[i]
                token = correlation_id_var.set(join.correlation_id)
                try:
                    results[i] = JoinSubmission(True, await self.join_in(session, join.application, ip=join.ip))
                finally:
                    correlation_id_var.reset(token)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _insert_new_members(
        self, session: AsyncSession, joins: list[tuple[int, JoinApplication, str | None, str | None]]
    ) -> dict[int, str]:
        """Insert those whose address is not a member yet, with their units, consent, key and MemberJoined, one
        statement per table. `joins`: (position, application, ip, correlation id); returns {position: member id}
        of those inserted (the others are members already)."""
        if not joins:
            return {}
        now = utcnow()
        ids = {i: str(uuid.uuid4()) for i, *_ in joins}
        rows = [self._member_row(ids[i], application, now) for i, application, *_ in joins]
        inserted = {row.id for row in (await session.execute(_INSERT_MEMBER, rows)).all()}
        new = [join for join in joins if ids[join[0]] in inserted]
        if not new:
            return {}
        units = {i: (_unique(a.group_ids), _unique(a.subteam_ids)) for i, a, *_ in new}
        groups = [{"member_id": ids[i], "group_id": g} for i, *_ in new for g in units[i][0]]
        subteams = [{"member_id": ids[i], "subteam_id": t} for i, *_ in new for t in units[i][1]]
        if groups:
            await session.execute(_INSERT_MEMBER_GROUP, groups)
        if subteams:
            await session.execute(_INSERT_MEMBER_SUBTEAM, subteams)
        await session.execute(
            insert(tables.consent_records), [self._consent_row(ids[i], a, ip, now) for i, a, ip, _ in new]
        )
        keys = {i: new_key() for i, *_ in new}
        await session.execute(insert(self.keys.table), [{"key_id": ids[i], "key": keys[i]} for i, *_ in new])
        envelopes = []
        for i, application, _, correlation_id in new:
            events = self._joined_events(
                ids[i],
                keys[i],
                application,
                *units[i],
                consent_version=application.consent_version,
                source=application.source,
                confirm=self.double_opt_in,
                now=now,
            )
            envelopes += [Envelope.wrap(e, correlation_id=correlation_id) for e in events]
        await self.outbox.add(session, *envelopes)
        return {i: ids[i] for i, *_ in new}

    def _member_row(self, member_id: str, application: JoinApplication, now: datetime) -> dict[str, Any]:
        return {
            "id": member_id,
            "email_normalised": application.email_normalised,
            "name": application.name,
            "postcode": application.postcode,
            "region_id": application.region_id,
            "suggested_group_id": application.suggested_group_id,
            "engagement_level": application.engagement_level,
            "interests": application.interests,
            "skills": application.skills,
            "time_available": application.time_available,
            "organisation_id": application.organisation_id,
            "organisation_name": application.organisation_name,
            "status": "pending" if self.double_opt_in else "confirmed",
            "confirmed_at": None if self.double_opt_in else now,
            "email_consent": application.email_consent,
            "source": application.source,
            "joined_at": now,
            "updated_at": now,
        }

    async def is_allowed_origin(self, origin: str | None) -> bool:
        if not origin:
            return False
        async with self.db.transaction() as session:
            found = await session.execute(
                select(tables.allowed_origins.c.origin).where(tables.allowed_origins.c.origin == origin)
            )
            return found.first() is not None

    async def allowed_origins(self) -> list[Any]:
        a = tables.allowed_origins
        async with self.db.transaction() as session:
            return list((await session.execute(select(a).order_by(a.c.origin))).all())

    async def add_allowed_origin(self, url: str, note: str, *, actor: str) -> str:
        """Let a site embed the join form (and be redirected back to): its origin, from any of its addresses."""
        from services.membership.accounts import AccountProblem

        origin = origin_of(url)
        if origin is None or len(origin) > 200 or len(note) > 200:
            raise AccountProblem({"origin": "Enter the site's address, like https://www.example.org"})
        async with self.db.transaction() as session:
            await session.execute(
                pg_insert(tables.allowed_origins)
                .values(origin=origin, note=collapse_spaces(note))
                .on_conflict_do_update(index_elements=["origin"], set_={"note": collapse_spaces(note)})
            )
            await session.execute(
                insert(tables.audit_log).values(actor=actor, action="origin.allowed", detail={"origin": origin})
            )
        return origin

    async def remove_allowed_origin(self, origin: str, *, actor: str) -> None:
        a = tables.allowed_origins
        async with self.db.transaction() as session:
            await session.execute(delete(a).where(a.c.origin == origin))
            await session.execute(
                insert(tables.audit_log).values(actor=actor, action="origin.removed", detail={"origin": origin})
            )

    # joining -------------------------------------------------------------------------------------
    async def join(self, application: JoinApplication, *, ip: str | None) -> JoinOutcome:
        """Store a new member (or update the member with that email) and announce it, in one transaction.

        Joining again never creates a duplicate and never raises a second MemberJoined, even when two
        submissions race: the unique email settles it; the loser of the race updates the winner's row.
        """
        async with self.db.transaction() as session:
            return await self.join_in(session, application, ip=ip)

    async def join_in(self, session: AsyncSession, application: JoinApplication, *, ip: str | None) -> JoinOutcome:
        """`join` inside a transaction the caller holds (a consumer's, with its inbox row)."""
        created = await self._insert_new_members(session, [(0, application, ip, correlation_id_var.get())])
        if created:
            return JoinOutcome(created[0], True)
        now = utcnow()
        m = tables.members
        # Someone with this email exists (perhaps committed a moment ago by a simultaneous submission).
        previous = (
            await session.execute(
                select(m).where(m.c.email_normalised == application.email_normalised).with_for_update()
            )
        ).one()
        await self._update_on_rejoin(session, previous, application, now)
        await self._record_consent(session, previous.id, application, ip, now)
        return JoinOutcome(previous.id, False)

    async def _set_units(
        self, session: AsyncSession, member_id: str, group_ids: list[str], subteam_ids: list[str]
    ) -> None:
        if group_ids:
            await session.execute(_INSERT_MEMBER_GROUP, [{"member_id": member_id, "group_id": g} for g in group_ids])
        if subteam_ids:
            await session.execute(
                _INSERT_MEMBER_SUBTEAM, [{"member_id": member_id, "subteam_id": s} for s in subteam_ids]
            )

    async def units_of(self, session: AsyncSession, member_id: str) -> tuple[list[str], list[str]]:
        mg, ms = tables.member_groups, tables.member_subteams
        groups = (
            (await session.execute(select(mg.c.group_id).where(mg.c.member_id == member_id).order_by(mg.c.joined_at)))
            .scalars()
            .all()
        )
        subteams = (
            (await session.execute(select(ms.c.subteam_id).where(ms.c.member_id == member_id).order_by(ms.c.joined_at)))
            .scalars()
            .all()
        )
        return list(groups), list(subteams)

    async def _record_consent(
        self, session: AsyncSession, member_id: str, application: JoinApplication, ip: str | None, now: datetime
    ) -> None:
        await session.execute(insert(tables.consent_records), self._consent_row(member_id, application, ip, now))

    def _consent_row(
        self, member_id: str, application: JoinApplication, ip: str | None, now: datetime
    ) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "member_id": member_id,
            "channel": "email",
            "granted": application.email_consent,
            "wording_version": application.consent_version,
            "source": application.source,
            "site": application.site,
            "ip_hash": self.hash_ip(ip) if ip else None,
            "recorded_at": now,
        }

    @staticmethod
    def _joined_events(
        member_id: str,
        key: bytes,
        profile: Any,
        group_ids: list[str],
        subteam_ids: list[str],
        *,
        consent_version: str,
        source: str,
        confirm: bool,
        now: datetime,
    ) -> list[EventData]:
        """The member's key and MemberJoined; `profile` is a JoinApplication or a stored member row."""

        def sealed(value: str) -> Any:
            return seal(value, key, key_id=member_id, owner=OWNER)

        return [
            SubjectKeyIssued(key_id=member_id, key=encode_key(key)),
            MemberJoined(
                member_id=member_id,
                email=sealed(profile.email_normalised),
                name=sealed(profile.name),
                postcode=sealed(profile.postcode) if profile.postcode else None,
                region_id=profile.region_id,
                group_ids=group_ids,
                suggested_group_id=profile.suggested_group_id,
                subteam_ids=subteam_ids,
                interests=list(profile.interests),
                engagement_level=profile.engagement_level,
                organisation_id=profile.organisation_id,
                email_consent=profile.email_consent,
                consent_wording_version=consent_version,
                source=source,
                confirmation_required=confirm,
                joined_at=now,
            ),
        ]

    async def _announce_join(
        self, session: AsyncSession, member_id: str, application: JoinApplication, now: datetime, confirm: bool
    ) -> None:
        """MemberJoined again for someone who had left, from their stored row (updated by this join)."""
        key, _ = await self.keys.get_or_create(session, member_id)
        group_ids, subteam_ids = await self.units_of(session, member_id)
        row = (await session.execute(select(tables.members).where(tables.members.c.id == member_id))).one()
        events = self._joined_events(
            member_id,
            key,
            row,
            group_ids,
            subteam_ids,
            consent_version=application.consent_version,
            source=application.source,
            confirm=confirm,
            now=now,
        )
        await self._emit(session, events)

    async def _update_on_rejoin(
        self, session: AsyncSession, previous: Any, application: JoinApplication, now: datetime
    ) -> None:
        """Joining again updates the member; lists only grow. One event per kind of change, none if nothing changed."""
        m = tables.members
        member_id = previous.id
        old_groups, old_subteams = await self.units_of(session, member_id)
        new_groups = merged(old_groups, application.group_ids)
        new_subteams = merged(old_subteams, application.subteam_ids)
        new_interests = merged(previous.interests, application.interests)
        values: dict[str, Any] = {
            "name": application.name,
            "engagement_level": application.engagement_level,
            "interests": new_interests,
            "updated_at": now,
        }
        if not application.replace_profile:
            values.update(name=previous.name or application.name, engagement_level=previous.engagement_level)
            if previous.postcode:  # where they live is known already: the RSVP's postcode does not move them
                application.postcode = None
                application.region_id = None
                application.group_ids = []
        if application.postcode:
            values.update(
                postcode=application.postcode,
                region_id=application.region_id,
                suggested_group_id=application.suggested_group_id,
            )
        elif application.region_id:
            values["region_id"] = application.region_id
        for name in ("skills", "time_available", "organisation_id", "organisation_name"):
            if getattr(application, name):
                values[name] = getattr(application, name)
        rejoining = previous.status == "left"
        if rejoining:
            values.update(
                status="confirmed" if previous.confirmed_at or not self.double_opt_in else "pending", left_at=None
            )
        consent_regained = application.email_consent and not previous.email_consent
        if consent_regained:
            values["email_consent"] = True
        await session.execute(update(m).where(m.c.id == member_id).values(**values))
        await self._set_units(session, member_id, application.group_ids, application.subteam_ids)

        if rejoining:
            # Back after leaving: everyone who forgot them learns them again (no second welcome: same member).
            await self._announce_join(session, member_id, application, now, values["status"] == "pending")
            return
        events: list[EventData] = []
        changed = [
            field
            for field, old, new in (
                ("name", previous.name, values["name"]),
                ("postcode", previous.postcode, values.get("postcode", previous.postcode)),
                ("region_id", previous.region_id, values.get("region_id", previous.region_id)),
                ("group_ids", old_groups, new_groups),
                ("subteam_ids", old_subteams, new_subteams),
                ("interests", list(previous.interests), new_interests),
                ("engagement_level", previous.engagement_level, values["engagement_level"]),
                ("organisation_id", previous.organisation_id, values.get("organisation_id", previous.organisation_id)),
            )
            if old != new
        ]
        if changed:
            events.append(
                MemberProfileUpdated(
                    member_id=member_id,
                    changed=changed,
                    name=await self.keys.seal(session, member_id, values["name"]) if "name" in changed else None,
                    region_id=values.get("region_id", previous.region_id),
                    group_ids=new_groups,
                    subteam_ids=new_subteams,
                    interests=new_interests,
                    engagement_level=values["engagement_level"],
                    organisation_id=values.get("organisation_id", previous.organisation_id),
                )
            )
        if previous.engagement_level != values["engagement_level"]:
            events.append(
                EngagementLevelChosen(
                    member_id=member_id, level=values["engagement_level"], previous_level=previous.engagement_level
                )
            )
        if consent_regained:
            events.append(
                ConsentChanged(
                    member_id=member_id,
                    granted=True,
                    wording_version=application.consent_version,
                    source=application.source,
                )
            )
        await self._emit(session, events)

    # double opt-in -------------------------------------------------------------------------------
    async def confirm(self, member_id: str) -> bool:
        """Confirm a member's email address; True if this confirmed it, False if it already was."""
        m = tables.members
        async with self.db.transaction() as session:
            row = (await session.execute(select(m.c.status).where(m.c.id == member_id).with_for_update())).first()
            if row is None or row.status in ("erased", "left"):
                raise MemberNotFound(member_id)
            if row.status != "pending":
                return False
            now = utcnow()
            await session.execute(
                update(m).where(m.c.id == member_id).values(status="confirmed", confirmed_at=now, updated_at=now)
            )
            await self._emit(session, [MemberConfirmed(member_id=member_id, confirmed_at=now)])
            return True

    async def prune_rate_limits(self) -> None:
        async with self.db.transaction() as session:
            await RateLimiter.prune(session)

    # members' rights -----------------------------------------------------------------------------
    async def _member_for_update(self, session: AsyncSession, member_id: str, *, allow_left: bool = True) -> Any:
        m = tables.members
        row = (await session.execute(select(m).where(m.c.id == member_id).with_for_update())).first()
        if row is None or row.status == "erased" or (row.status == "left" and not allow_left):
            raise MemberNotFound(member_id)
        return row

    async def member_view(self, member_id: str) -> dict[str, Any]:
        """What the preferences page shows a member about themselves."""
        async with self.db.transaction() as session:
            row = await self._member_for_update(session, member_id)
            group_ids, subteam_ids = await self.units_of(session, member_id)
        return {"member": row, "group_ids": group_ids, "subteam_ids": subteam_ids}

    async def update_preferences(self, member_id: str, chosen: Preferences, *, source: str = "preferences") -> None:
        """Replace a member's choices; announce what changed (consent, level, profile), nothing if nothing did."""
        m = tables.members
        async with self.db.transaction() as session:
            row = await self._member_for_update(session, member_id, allow_left=False)
            old_groups, old_subteams = await self.units_of(session, member_id)
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
            await self._set_units(session, member_id, chosen.group_ids, chosen.subteam_ids)
            new_groups, new_subteams = await self.units_of(session, member_id)
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
            await self._emit(session, events)

    async def _consent_event(
        self, session: AsyncSession, member_id: str, granted: bool, source: str, topics: list[str] | None = None
    ) -> ConsentChanged:
        """A consent change, also kept as proof (a consent record) with the wording in force."""
        options = await load_join_options(session)
        await session.execute(
            pg_insert(tables.consent_records).values(
                id=str(uuid.uuid4()),
                member_id=member_id,
                channel="email",
                granted=granted,
                wording_version=options.consent_version,
                source=source,
                recorded_at=utcnow(),
            )
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
        async with self.db.transaction() as session:
            row = await self._member_for_update(session, member_id)
            if not row.email_consent:
                return False
            await session.execute(update(m).where(m.c.id == member_id).values(email_consent=False, updated_at=utcnow()))
            await self._emit(session, [await self._consent_event(session, member_id, False, source)])
            return True

    async def leave(self, member_id: str, reason: str | None = None) -> bool:
        """Leave the network: no more email, roles end, others forget them; the record stays until erasure."""
        m = tables.members
        async with self.db.transaction() as session:
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
            await self._emit(session, [MemberLeft(member_id=member_id, reason=(reason or "").strip()[:500] or None)])
            return True

    async def erase(self, member_id: str, *, actor: str) -> bool:
        """Erase a member: personal data deleted here (the row keeps only its id and dates), their key destroyed
        with a tombstone on the key topic, and MemberErased so every other service deletes its copies."""
        m = tables.members
        async with self.db.transaction() as session:
            row = (await session.execute(select(m).where(m.c.id == member_id).with_for_update())).first()
            if row is None or row.status == "erased":
                return False
            now = utcnow()
            await session.execute(
                update(m)
                .where(m.c.id == member_id)
                .values(
                    email_normalised=None,
                    name="",
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
            ):
                await session.execute(delete(table).where(table.c.member_id == member_id))
            await session.execute(
                insert(tables.audit_log).values(actor=actor, action="member.erased", member_id=member_id, detail={})
            )
            await self._emit(session, [MemberErased(member_id=member_id, erased_at=now)])
            await self.keys.shred(session, [member_id], self.outbox, topics.MEMBERSHIP_SUBJECT_KEYS)
            return True

    async def everything_about(self, member_id: str) -> dict[str, Any]:
        """Everything held about a member, for them to download (the right of access); audited."""
        c, g, a = tables.consent_records, tables.role_grants, tables.audit_log
        async with self.db.transaction() as session:
            row = await self._member_for_update(session, member_id)
            names: dict[str, str] = {}
            for table in (tables.regions, tables.local_groups, tables.subteams, tables.partner_organisations):
                names.update({r.id: r.name for r in (await session.execute(select(table.c.id, table.c.name))).all()})
            group_ids, subteam_ids = await self.units_of(session, member_id)
            consents = await session.execute(select(c).where(c.c.member_id == member_id).order_by(c.c.recorded_at))
            roles = await session.execute(select(g).where(g.c.member_id == member_id).order_by(g.c.granted_at))
            views = await session.execute(select(a).where(a.c.member_id == member_id).order_by(a.c.id))
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
                    "email": row.email_normalised,
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
                "who_looked_at_your_record": [
                    {"at": when(r.at), "who": r.actor, "what": r.action} for r in views.all()
                ],
            }

    # integrations ----------------------------------------------------------------------------------
    async def update_person(
        self,
        session: AsyncSession,
        member_id: str,
        *,
        name: str | None = None,
        postcode: str | None = None,
        email_consent: bool | None = None,
        source: str,
    ) -> None:
        """Change what an integration may change (name, postcode, email consent); announce what changed."""
        m = tables.members
        row = await self._member_for_update(session, member_id, allow_left=False)
        values: dict[str, Any] = {}
        events: list[EventData] = []
        changed: list[str] = []
        if name and name != row.name:
            values["name"] = name
            changed.append("name")
        if postcode and postcode != row.postcode:
            options = await load_join_options(session)
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
            group_ids, subteam_ids = await self.units_of(session, member_id)
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
        await self._emit(session, events)
