"""Joining: storing join forms (one by one, or a batch of them in one transaction), joins that come with an RSVP,
an action or an integration, the double opt-in confirmation, and the join form's options.

What a join does to someone who is a member already is decided by `domain.rejoin`; this module loads the record,
writes what the rule decided and emits the events it raises.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from services.membership import db as tables
from services.membership import queries
from services.membership.domain import (
    OWNER,
    JoinApplication,
    JoinOptions,
    joined_events,
    new_member_row,
    rejoin,
)
from services.membership.ratelimit import JOIN_PER_EMAIL, JOIN_PER_IP, Attempt, RateLimiter, Verdict
from shared.cache import Expiring
from shared.contact import address_hash
from shared.crypto import KeyStore, new_key
from shared.events.catalog import MemberConfirmed
from shared.events.envelope import Envelope, EventData
from shared.uow import UnitOfWork, UnitsOfWork

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


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


class Joins:
    """The join use cases; `double_opt_in`: a new member confirms their address before they count."""

    def __init__(self, uows: UnitsOfWork, secret_key: str, double_opt_in: bool = True) -> None:
        self.uows = uows
        self.keys = KeyStore(tables.subject_keys, OWNER)
        self.secret_key = secret_key
        self.double_opt_in = double_opt_in
        self.limiter = RateLimiter(secret_key)
        self._options = Expiring(self._load_options, JOIN_OPTIONS_TTL_S)

    def hash_ip(self, ip: str) -> str:
        """Proof of where consent came from, without keeping the address itself."""
        return hmac.new(self.secret_key.encode(), ip.encode(), hashlib.sha256).hexdigest()

    # the form's options --------------------------------------------------------------------------
    async def options(self) -> JoinOptions:
        """The join form's choices, read from their tables at most every few seconds."""
        return await self._options.get()

    async def _load_options(self) -> JoinOptions:
        async with self.uows.begin() as uow:
            return await queries.load_join_options(uow.session)

    def forget_options(self) -> None:
        """After a change to regions, groups, sub-teams, partners or the form's wording: read them again."""
        self._options.forget()

    # spam protection -----------------------------------------------------------------------------
    async def allow_join_from(self, ip: str) -> Verdict:
        async with self.uows.begin() as uow:
            return await self.limiter.hit(uow.session, JOIN_PER_IP, ip, ip=ip)

    async def prune_rate_limits(self) -> None:
        async with self.uows.begin() as uow:
            await RateLimiter.prune(uow.session)

    # storing joins -------------------------------------------------------------------------------
    async def submit_joins(self, pending: Sequence[PendingJoin]) -> list[JoinSubmission]:
        """Valid join forms in one transaction, with exactly the effects of submitting them one after another
        in this order (see `JoinBatcher`): both limits counted in one statement, new members written with one
        statement per table, anyone already a member (or twice in the batch) updated as a join again. Each
        join's events carry its own request's correlation id.

        One refused for its address changes nothing but the counters. One over the per-email limit is counted
        and stores nothing, and the caller answers as if it were accepted.
        """
        async with self.uows.begin() as uow:
            attempts = []
            for join in pending:
                attempts += [
                    Attempt(JOIN_PER_IP, join.ip, join.ip),
                    Attempt(JOIN_PER_EMAIL, join.application.email_normalised, join.ip),
                ]
            verdicts = await self.limiter.count(uow.session, attempts)
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
                uow, [(i, p.application, p.ip, p.correlation_id) for i, p in firsts]
            )
            for i in first_of_email.values():
                if i in created:
                    results[i] = JoinSubmission(True, JoinOutcome(created[i], True))
                else:
                    again.append(i)  # already a member
            for i in sorted(again):
                join = pending[i]
                outcome, events = await self._join_existing(uow, join.application, ip=join.ip)
                await uow.publish(*(Envelope.wrap(e, correlation_id=join.correlation_id) for e in events))
                results[i] = JoinSubmission(True, outcome)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def join(self, application: JoinApplication, *, ip: str | None) -> JoinOutcome:
        """Store a new member (or update the member with that email) and announce it, in one transaction.

        Joining again never creates a duplicate and never raises a second MemberJoined, even when two
        submissions race: the unique email settles it; the loser of the race updates the winner's row.
        """
        async with self.uows.begin() as uow:
            return await self.join_in(uow, application, ip=ip)

    async def join_in(self, uow: UnitOfWork, application: JoinApplication, *, ip: str | None) -> JoinOutcome:
        """`join` in a unit of work the caller holds (a consumer's, with its inbox row; an integration's)."""
        created = await self._insert_new_members(uow, [(0, application, ip, uow.correlation_id)])
        if created:
            return JoinOutcome(created[0], True)
        outcome, events = await self._join_existing(uow, application, ip=ip)
        await uow.emit(*events)
        return outcome

    async def _insert_new_members(
        self, uow: UnitOfWork, joins: list[tuple[int, JoinApplication, str | None, str | None]]
    ) -> dict[int, str]:
        """Insert those whose address is not a member yet, with their units, consent, key and MemberJoined, one
        statement per table. `joins`: (position, application, ip, correlation id); returns {position: member id}
        of those inserted (the others are members already)."""
        if not joins:
            return {}
        session = uow.session
        now = utcnow()
        ids = {i: str(uuid.uuid4()) for i, *_ in joins}
        rows = [new_member_row(ids[i], a, now, double_opt_in=self.double_opt_in) for i, a, *_ in joins]
        inserted = await queries.insert_new_members(session, rows)
        new = [join for join in joins if ids[join[0]] in inserted]
        if not new:
            return {}
        units = {i: (_unique(a.group_ids), _unique(a.subteam_ids)) for i, a, *_ in new}
        await queries.insert_units_of_many(
            session,
            [{"member_id": ids[i], "group_id": g} for i, *_ in new for g in units[i][0]],
            [{"member_id": ids[i], "subteam_id": t} for i, *_ in new for t in units[i][1]],
        )
        await queries.insert_consent_records(session, [self._consent_row(ids[i], a, ip, now) for i, a, ip, _ in new])
        keys = {i: new_key() for i, *_ in new}
        await queries.insert_member_keys(session, {ids[i]: keys[i] for i, *_ in new})
        envelopes = []
        for i, application, _, correlation_id in new:
            events = joined_events(
                ids[i],
                keys[i],
                application,
                *units[i],
                consent_version=application.consent_version,
                source=application.source,
                confirm=self.double_opt_in,
                now=now,
                email_hash=address_hash(self.secret_key, application.email_normalised),
            )
            envelopes += [
                Envelope.wrap(e, correlation_id=correlation_id, causation_id=uow.causation_id) for e in events
            ]
        await uow.publish(*envelopes)
        return {i: ids[i] for i in (join[0] for join in new)}

    async def _join_existing(
        self, uow: UnitOfWork, application: JoinApplication, *, ip: str | None
    ) -> tuple[JoinOutcome, list[EventData]]:
        """A join for an address that is a member: the record updated as `domain.rejoin` decides, the consent
        recorded; returns the events to announce (the caller knows in whose request)."""
        session = uow.session
        now = utcnow()
        previous = await queries.lock_member_by_email(session, application.email_normalised)
        decision = rejoin(
            await queries.member_record(session, previous), application, now, double_opt_in=self.double_opt_in
        )
        await queries.update_member(session, previous.id, decision.values)
        await queries.add_units(session, previous.id, decision.add_group_ids, decision.add_subteam_ids)
        await queries.insert_consent_records(session, self._consent_row(previous.id, application, ip, now))
        if decision.back_after_leaving:
            # MemberJoined again, from the stored record as this join updated it.
            key, _ = await self.keys.get_or_create(session, previous.id)
            group_ids, subteam_ids = await queries.units_of(session, previous.id)
            events = joined_events(
                previous.id,
                key,
                await queries.member_row(session, previous.id),
                group_ids,
                subteam_ids,
                consent_version=application.consent_version,
                source=application.source,
                confirm=decision.confirmation_required,
                now=now,
                email_hash=address_hash(self.secret_key, application.email_normalised),
            )
        else:
            name = decision.values["name"]
            sealed = await self.keys.seal(session, previous.id, name) if decision.name_changed else None
            events = decision.events(sealed)
        return JoinOutcome(previous.id, False), events

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

    # double opt-in -------------------------------------------------------------------------------
    async def confirm(self, member_id: str) -> bool:
        """Confirm a member's email address; True if this confirmed it, False if it already was."""
        m = tables.members
        async with self.uows.begin() as uow:
            session = uow.session
            row = (await session.execute(select(m.c.status).where(m.c.id == member_id).with_for_update())).first()
            if row is None or row.status in ("erased", "left"):
                raise MemberNotFound(member_id)
            if row.status != "pending":
                return False
            now = utcnow()
            await session.execute(
                update(m).where(m.c.id == member_id).values(status="confirmed", confirmed_at=now, updated_at=now)
            )
            await uow.emit(MemberConfirmed(member_id=member_id, confirmed_at=now))
            return True
