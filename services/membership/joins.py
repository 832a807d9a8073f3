"""Joining: storing join forms (one by one, or a batch of them in one transaction), joins that come with an RSVP,
an action or an integration, the double opt-in confirmation, and the join form's options.

A join for an address that is a member already (or was, and left) changes nothing about them: it is recorded as a
request and the address is emailed a link to confirm it (`member_requests`, decision 0006); only once the member
confirms does `domain.rejoin` decide what it does to their record, and this module writes that and emits the
events it raises. An integration's key (OSDI) changes people in its scope at once, as Action Network does.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership import queries
from services.membership.domain import (
    JOIN_CHANGE,
    OWNER,
    JoinApplication,
    JoinOptions,
    asks_first,
    change_summary,
    join_details,
    join_from_details,
    joined_events,
    new_member_row,
    rejoin,
)
from services.membership.member_requests import MemberRequest, MemberRequests, RequestNotValid
from services.membership.ratelimit import JOIN_PER_EMAIL, JOIN_PER_IP, Attempt, RateLimiter, Verdict
from shared.cache import Expiring
from shared.contact import address_hash
from shared.crypto import KeyStore, new_key
from shared.events.catalog import MemberConfirmed
from shared.events.envelope import Envelope, EventData, Sealed
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
    """The member a join was for; `new_member`: the join created them; `request_id`: the request a join for a
    member's address recorded for them to confirm (None when it asked nothing)."""

    member_id: str
    new_member: bool
    request_id: str | None = None


class MemberNotFound(LookupError):
    """No member with that id (or they were erased)."""


@dataclass(frozen=True)
class JoinChange:
    """A join waiting for the member to confirm it: what it would change, in words (none: nothing would)."""

    changes: list[tuple[str, str]]
    left: bool


def utcnow() -> datetime:
    return datetime.now(UTC)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


class Joins:
    """The join use cases; `double_opt_in`: a new member confirms their address before they count."""

    def __init__(
        self, uows: UnitsOfWork, secret_key: str, double_opt_in: bool = True, *, public_base_url: str = ""
    ) -> None:
        self.uows = uows
        self.keys = KeyStore(tables.subject_keys, OWNER)
        self.secret_key = secret_key
        self.double_opt_in = double_opt_in
        self.requests = MemberRequests(secret_key, public_base_url)
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
        """Forget old rate limit counters, expired requests (with the personal fields a waiting join holds) and
        thank-you pages' records of old joins."""
        async with self.uows.begin() as uow:
            await RateLimiter.prune(uow.session)
            await MemberRequests.prune(uow.session, utcnow())
            f = tables.join_followups
            await uow.session.execute(delete(f).where(f.c.expires_at <= utcnow()))

    # storing joins -------------------------------------------------------------------------------
    async def submit_joins(self, pending: Sequence[PendingJoin]) -> list[JoinSubmission]:
        """Valid join forms in one transaction, with exactly the effects of submitting them one after another
        in this order (see `JoinBatcher`): both limits counted in one statement, new members written with one
        statement per table, anyone already a member (or twice in the batch) asked by email to confirm the join
        (nothing about them changes yet). Each join's events carry its own request's correlation id.

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
        """Store a new member and announce it, in one transaction; for a member's address, ask them to confirm.

        Joining again never creates a duplicate and never raises a second MemberJoined, even when two
        submissions race: the unique email settles it; the loser of the race is a join for a member's address.
        """
        async with self.uows.begin() as uow:
            return await self.join_in(uow, application, ip=ip)

    async def join_in(
        self, uow: UnitOfWork, application: JoinApplication, *, ip: str | None, ask_first: bool = True
    ) -> JoinOutcome:
        """`join` in a unit of work the caller holds (a consumer's, with its inbox row; an integration's).
        `ask_first=False`: a member's record is changed at once (an integration's key, within its scope)."""
        created = await self._insert_new_members(uow, [(0, application, ip, uow.correlation_id)])
        if created:
            return JoinOutcome(created[0], True)
        if ask_first:
            outcome, events = await self._join_existing(uow, application, ip=ip)
        else:
            previous = await queries.lock_member_by_email(uow.session, application.email_normalised)
            events = await self.apply_join(uow, previous, application, self._ip_hash(ip))
            outcome = JoinOutcome(previous.id, False)
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
        await queries.insert_consent_records(
            session, [self._consent_row(ids[i], a, self._ip_hash(ip), now) for i, a, ip, _ in new]
        )
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
        """A join for an address that is a member (or was, and left): nothing about them changes. The join is kept
        (its personal fields sealed with the member's key) and the address emailed a link to confirm it; returns
        that request's event (none when a join from elsewhere would change nothing)."""
        session = uow.session
        now = utcnow()
        previous = await queries.lock_member_by_email(session, application.email_normalised)
        decision = rejoin(await queries.member_record(session, previous), application, now, double_opt_in=False)
        if not asks_first(application, decision):
            return JoinOutcome(previous.id, False), []
        request_id = str(uuid.uuid4())
        event = await self.ask_to_confirm(session, previous, application, self._ip_hash(ip), request_id=request_id)
        return JoinOutcome(previous.id, False, request_id), [event]

    async def ask_to_confirm(
        self,
        session: AsyncSession,
        member: Any,
        application: JoinApplication,
        ip_hash: str | None,
        *,
        request_id: str | None = None,
    ) -> EventData:
        """Keep a join for `member` (a locked row) until they confirm it by the link emailed to them, its personal
        fields sealed with their key (replacing any older one); returns the event that has the link emailed."""
        plain, personal = join_details(application)
        sealed = {k: (await self.keys.seal(session, member.id, v)).model_dump() for k, v in personal.items()}
        return await self.requests.record(
            session,
            member,
            JOIN_CHANGE,
            utcnow(),
            details={"join": plain, "sealed": sealed},
            ip_hash=ip_hash,
            request_id=request_id,
        )

    async def waiting_join(self, session: AsyncSession, request: MemberRequest, member: Any) -> JoinApplication:
        """The join a request kept, its personal fields unsealed (raises KeyDestroyed after an erasure)."""
        personal = {
            k: await self.keys.unseal(session, Sealed.model_validate(v))
            for k, v in request.details.get("sealed", {}).items()
        }
        return join_from_details(
            request.details.get("join", {}), {k: v for k, v in personal.items() if v}, member.email_normalised
        )

    async def join_change(self, token: str) -> JoinChange:
        """What the join a link names would change, now (reading it changes nothing: mail scanners open links)."""
        async with self.uows.begin() as uow:
            session = uow.session
            request = await self.requests.find(session, token, (JOIN_CHANGE,), utcnow())
            member = await queries.member_row(session, request.member_id)
            if member.status == "erased":
                raise RequestNotValid()
            application = await self.waiting_join(session, request, member)
            record = await queries.member_record(session, member)
            decision = rejoin(record, application, utcnow(), double_opt_in=False)
            return JoinChange(change_summary(record, decision, await self.options()), member.status == "left")

    async def confirm_join_change(self, token: str) -> str:
        """The member confirmed the join a link names (by a POST from the page it opens): their record changes
        as `domain.rejoin` decides, they are back if they had left, and their address counts as confirmed (the
        link reached it). The link is used up. Returns the member's id."""
        async with self.uows.begin() as uow:
            session = uow.session
            request = await self.requests.find(session, token, (JOIN_CHANGE,), utcnow(), lock=True)
            member = await queries.lock_member(session, request.member_id)
            if member is None or member.status == "erased":
                raise RequestNotValid()
            application = await self.waiting_join(session, request, member)
            events = await self.apply_join(uow, member, application, request.ip_hash, address_confirmed=True)
            await self.requests.used(session, request)
            if (await queries.member_row(session, member.id)).status == "pending":
                events.append(await self._confirmed(session, member.id))
            await uow.emit(*events)
            return str(member.id)

    async def apply_join(
        self,
        uow: UnitOfWork,
        previous: Any,
        application: JoinApplication,
        ip_hash: str | None,
        *,
        address_confirmed: bool = False,
    ) -> list[EventData]:
        """A join applied to a member's record (locked): updated as `domain.rejoin` decides, the consent recorded;
        returns the events to announce. `address_confirmed`: the member confirmed through a link emailed to the
        address, so someone back after leaving needs no second confirmation."""
        session = uow.session
        now = utcnow()
        double_opt_in = self.double_opt_in and not address_confirmed
        decision = rejoin(await queries.member_record(session, previous), application, now, double_opt_in=double_opt_in)
        await queries.update_member(session, previous.id, decision.values)
        await queries.add_units(session, previous.id, decision.add_group_ids, decision.add_subteam_ids)
        if not application.adds_only:  # "tell us more" gives no consent
            await queries.insert_consent_records(session, self._consent_row(previous.id, application, ip_hash, now))
        if decision.back_after_leaving:
            # MemberJoined again, from the stored record as this join updated it.
            key, _ = await self.keys.get_or_create(session, previous.id)
            group_ids, subteam_ids = await queries.units_of(session, previous.id)
            return joined_events(
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
        name = decision.values["name"]
        sealed = await self.keys.seal(session, previous.id, name) if decision.name_changed else None
        return decision.events(sealed)

    def _ip_hash(self, ip: str | None) -> str | None:
        return self.hash_ip(ip) if ip else None

    def _consent_row(
        self, member_id: str, application: JoinApplication, ip_hash: str | None, now: datetime
    ) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "member_id": member_id,
            "channel": "email",
            "granted": application.email_consent,
            "wording_version": application.consent_version,
            "source": application.source,
            "site": application.site,
            "ip_hash": ip_hash,
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
            await uow.emit(await self._confirmed(session, member_id))
            return True

    async def confirmable(self, member_id: str) -> bool:
        """Whether a confirmation link's member can still confirm (reading changes nothing)."""
        m = tables.members
        async with self.uows.begin() as uow:
            status = (await uow.session.execute(select(m.c.status).where(m.c.id == member_id))).scalar()
            return status not in (None, "erased", "left")

    @staticmethod
    async def _confirmed(session: AsyncSession, member_id: str) -> MemberConfirmed:
        """A pending member's address confirmed (the row is locked by the caller)."""
        m = tables.members
        now = utcnow()
        await session.execute(
            update(m).where(m.c.id == member_id).values(status="confirmed", confirmed_at=now, updated_at=now)
        )
        return MemberConfirmed(member_id=member_id, confirmed_at=now)
