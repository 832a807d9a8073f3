"""Notifications' use cases: keep the mirror of who may be emailed, and queue each email exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications import queries
from services.notifications.domain import (
    Readiness,
    first_name_of,
    lifts_unsubscribe,
    meetings_near,
    mirror_status,
    readiness,
)
from services.notifications.rendering import EmailRenderer
from services.notifications.suppression import BULK_KINDS, MARKETING_KINDS, Suppressions
from services.notifications.wording import EmailSettings, autoresponder_text, format_when, one_line
from shared import tokens
from shared.config import Settings
from shared.crypto import KeyStore, decode_key, unseal
from shared.events.catalog import (
    ConsentChanged,
    MemberConfirmed,
    MemberErased,
    MemberJoined,
    MemberLeft,
    MemberProfileUpdated,
)
from shared.events.envelope import Envelope, Sealed
from shared.logging import get_logger
from shared.parking import ParkingLot
from shared.uow import UnitOfWork, UnitsOfWork

log = get_logger(__name__)


# What an erased person's delivery records keep: the kind, the status and the times; not the address, the words,
# the Reply-To (a letter's writer) or the relay's error (relays echo the address).
ERASED_DELIVERY = {
    "recipient_email": None,
    "reply_to": None,
    "body_text": "",
    "body_html": None,
    "subject": "(erased)",
    "last_error": None,
}


class NotificationService:
    """Keeps the mirror of who may be emailed and queues each email once."""

    def __init__(self, uows: UnitsOfWork, settings: Settings) -> None:
        self.uows = uows
        self.settings = settings
        self.keys = KeyStore(tables.subject_keys, owner="membership")
        self.parking = ParkingLot(tables.parked_events)
        self.suppressions = Suppressions(settings.secret_key)
        self.renderer = EmailRenderer(settings.network_name)
        self.wording = EmailSettings(settings.network_name)  # the organisers' wording (the emails page)
        # Set once a transaction that queued deliveries (or an announcement to fan out) has committed: a worker
        # woken before would find nothing yet and go back to waiting for its poll.
        self.deliveries_queued = asyncio.Event()
        self.announcements_queued = asyncio.Event()

    # keys ------------------------------------------------------------------------------------------
    async def remember_keys(self, uow: UnitOfWork, keys: list[tuple[str, str]]) -> list[list[Envelope]]:
        """Keep subjects' keys (members', RSVPs', actions'; each once) with three statements for all of them, and
        return the events that waited for them: each subject's, oldest first, subject by subject in the given
        order. The caller (consumers.py) dispatches them once all the keys are kept."""
        ids = [key_id for key_id, _ in keys]
        await self.parking.lock_subjects(uow.session, ids)
        await self.keys.put_many(uow.session, {key_id: decode_key(key_b64) for key_id, key_b64 in keys})
        released = await self.parking.release_many(uow.session, ids)
        return [released[key_id] for key_id in ids if key_id in released]

    async def forget_key(self, uow: UnitOfWork, key_id: str) -> None:
        """A key was destroyed (its subject erased): the copy goes, and so does what was written to or about that
        subject here: an RSVP's or an action's emails, among them a letter to an MP (its body and Reply-To) and
        the copy to its writer, who may not have been a member when they wrote it."""
        session = uow.session
        await self.keys.destroy(session, key_id)
        d = tables.deliveries
        theirs = (d.c.subject_ref == key_id) | (d.c.recipient_id == key_id)
        await session.execute(  # not sent yet: never sent (as _cancel_pending; a letter's MP is its recipient)
            update(d)
            .where(theirs, d.c.status.in_(("pending", "sending")))
            .values(status="suppressed", lease_until=None)
        )
        await session.execute(update(d).where(theirs).values(**ERASED_DELIVERY))
        rv = tables.rsvps
        await session.execute(update(rv).where(rv.c.rsvp_id == key_id).values(email=None, name=None))

    async def key_ready(self, uow: UnitOfWork, envelope: Envelope, key_id: str) -> bool:
        """True when the handler may read `key_id`'s sealed fields now; otherwise the event is parked (or,
        when the key was destroyed, dropped). Later events of a subject with parked ones wait too, in order."""
        return key_id in await self.ready_keys(uow, [(envelope, key_id)])

    async def ready_keys(self, uow: UnitOfWork, waiting: list[tuple[Envelope, str]]) -> dict[str, bytes]:
        """`key_ready` for several events, each with the key it needs (each key once), with three statements for
        all of them: the keys of those that may go ahead; the others are parked (or dropped), in the given order."""
        ids = [key_id for _, key_id in waiting]
        await self.parking.lock_subjects(uow.session, ids)
        states = await queries.key_states(uow.session, ids)
        ready: dict[str, bytes] = {}
        parked_now: list[tuple[Envelope, str]] = []
        for envelope, key_id in waiting:
            key, destroyed, parked = states[key_id]
            decision = readiness(has_key=key is not None, destroyed=destroyed, others_wait=parked)
            if decision is Readiness.WAIT:
                parked_now.append((envelope, key_id))
            elif decision is Readiness.NOW:
                assert key is not None
                ready[key_id] = bytes(key)
        await self.parking.park_many(uow.session, parked_now, reason="key not received yet")
        return ready

    async def _unseal(self, session: AsyncSession, sealed: Sealed | None, key_id: str, key: bytes) -> str | None:
        """A sealed field, with the subject's key in hand when it is sealed with that key."""
        if sealed is not None and sealed.key_id == key_id:
            return unseal(sealed, key)
        return await self.keys.unseal(session, sealed)

    # members ---------------------------------------------------------------------------------------
    async def member_joined(self, uow: UnitOfWork, envelope: Envelope, event: MemberJoined) -> None:
        """Mirror the new member and queue their welcome email (with a confirmation link when needed)."""
        await self.members_joined(uow, [(envelope, event)])

    async def members_joined(self, uow: UnitOfWork, joins: list[tuple[Envelope, MemberJoined]]) -> None:
        """`member_joined` for a run of joins (each member once), with one statement per step for all of them."""
        session = uow.session
        keys = await self.ready_keys(uow, [(envelope, event.member_id) for envelope, event in joins])
        if not keys:
            return
        wording = await self.wording.current(session)
        places = sorted({u for _, e in joins for u in (*e.group_ids, *e.subteam_ids, e.region_id) if u})
        names = await queries.unit_names(session, [g for _, e in joins for g in e.group_ids[:1]])
        upcoming = await queries.meetings_in_places(session, places, datetime.now(UTC))
        mirrors: list[dict[str, Any]] = []
        consented: list[str] = []
        welcomes: list[dict[str, Any]] = []
        for envelope, event in joins:
            key = keys.get(event.member_id)
            if key is None:
                continue
            email = await self._unseal(session, event.email, event.member_id, key)
            name = await self._unseal(session, event.name, event.member_id, key)
            mirrors.append(
                {
                    "member_id": event.member_id,
                    "email": email,
                    "address_key": self.suppressions.address_key(email) if email else None,
                    "name": name,
                    "email_consent": event.email_consent,
                    "status": mirror_status(event.confirmation_required),
                    "region_id": event.region_id,
                    "group_ids": event.group_ids,
                    "subteam_ids": event.subteam_ids,
                    "engagement_level": event.engagement_level,
                    "interests": event.interests,
                    "joined_at": event.joined_at,
                }
            )
            if lifts_unsubscribe(event.email_consent, email):
                assert email is not None
                consented.append(self.suppressions.address_key(email))
            confirm_url = None
            if event.confirmation_required:
                token = tokens.sign(self.settings.secret_key, tokens.CONFIRM_EMAIL, {"m": event.member_id})
                confirm_url = f"{self.settings.public_base_url}/join/confirm?token={token}"
            first_name = first_name_of(name)
            group_name = names.get(event.group_ids[0], "") if event.group_ids else ""
            subject, intro = autoresponder_text(
                wording, "welcome", {"first_name": first_name, "group_name": group_name or wording["network_name"]}
            )
            near = meetings_near(
                upcoming, region_id=event.region_id, group_ids=event.group_ids, subteam_ids=event.subteam_ids
            )
            body_text, body_html = self.renderer.render(
                "welcome",
                wording=wording,
                name=first_name,
                intro=intro,
                group_name=group_name,
                meetings=[meeting_line(m) for m in near],
                confirm_url=confirm_url,
                **self.footer(event.member_id),
            )
            welcomes.append(
                {
                    "kind": "welcome",
                    "subject_ref": event.member_id,
                    "recipient_id": event.member_id,
                    "recipient_email": email,
                    "subject": subject,
                    "body_text": body_text,
                    "body_html": body_html,
                    "correlation_id": envelope.correlation_id,
                }
            )
        if not mirrors:
            return
        await session.execute(_UPSERT_RECIPIENT, mirrors)
        if consented:
            await self.suppressions.lift_many(session, consented, "unsubscribed", "left")
        await self.queue_many(uow, welcomes)

    async def member_confirmed(self, uow: UnitOfWork, envelope: Envelope, event: MemberConfirmed) -> None:
        if not await self.key_ready(uow, envelope, event.member_id):
            return
        r = tables.recipients
        await uow.session.execute(update(r).where(r.c.member_id == event.member_id).values(status="confirmed"))

    async def profile_updated(self, uow: UnitOfWork, envelope: Envelope, event: MemberProfileUpdated) -> None:
        if not await self.key_ready(uow, envelope, event.member_id):
            return
        session = uow.session
        r = tables.recipients
        values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        if event.name is not None:
            values["name"] = await self.keys.unseal(session, event.name)
        if event.email is not None:
            values["email"] = await self.keys.unseal(session, event.email)
            values["address_key"] = self.suppressions.address_key(values["email"]) if values["email"] else None
        for field in ("region_id", "group_ids", "subteam_ids", "engagement_level", "interests"):
            if field in event.changed or field.removesuffix("_id") in event.changed:
                values[field] = getattr(event, field)
        await session.execute(update(r).where(r.c.member_id == event.member_id).values(**values))

    async def consent_changed(self, uow: UnitOfWork, envelope: Envelope, event: ConsentChanged) -> None:
        """Unsubscribing takes effect at once: the address joins the suppression list in this transaction."""
        if not await self.key_ready(uow, envelope, event.member_id):
            return
        session = uow.session
        r = tables.recipients
        email = await self._email_of(session, event.member_id)
        await session.execute(
            update(r)
            .where(r.c.member_id == event.member_id)
            .values(email_consent=event.granted, email_topics=event.topics if event.granted and event.topics else None)
        )
        if event.granted:
            await self.suppressions.lift(session, email, "unsubscribed")
        else:
            await self.suppressions.suppress(session, email, "unsubscribed")
        await self._cancel_pending(session, event.member_id, MARKETING_KINDS)

    async def member_left(self, uow: UnitOfWork, envelope: Envelope, event: MemberLeft) -> None:
        if not await self.key_ready(uow, envelope, event.member_id):
            return
        session = uow.session
        r = tables.recipients
        email = await self._email_of(session, event.member_id)
        await session.execute(update(r).where(r.c.member_id == event.member_id).values(status="left"))
        await self.suppressions.suppress(session, email, "left")
        await self._cancel_pending(session, event.member_id, None)

    async def member_erased(self, uow: UnitOfWork, envelope: Envelope, event: MemberErased) -> None:
        """Forget everything personal about the member here; keep only a keyed hash so they are never emailed."""
        session = uow.session
        email = await self._email_of(session, event.member_id)
        await self.suppressions.suppress(session, email, "erased")
        await self._cancel_pending(session, event.member_id, None)
        await session.execute(delete(tables.recipients).where(tables.recipients.c.member_id == event.member_id))
        d = tables.deliveries
        await session.execute(update(d).where(d.c.recipient_id == event.member_id).values(**ERASED_DELIVERY))
        rv = tables.rsvps
        await session.execute(update(rv).where(rv.c.member_id == event.member_id).values(email=None, name=None))
        await session.execute(delete(tables.parked_events).where(tables.parked_events.c.subject_id == event.member_id))
        await self.keys.destroy(session, event.member_id)

    async def _email_of(self, session: AsyncSession, member_id: str) -> str | None:
        r = tables.recipients
        return (await session.execute(select(r.c.email).where(r.c.member_id == member_id))).scalar()

    async def _cancel_pending(self, session: AsyncSession, recipient_id: str, kinds: frozenset[str] | None) -> None:
        """Stop the recipient's deliveries not sent yet, those a sender has claimed too: staging its record then
        finds them no longer its own and drops the email before the relay accepts it. (Left 'sending', an erased
        member's delivery would come back without its address when its lease ran out.)"""
        d = tables.deliveries
        stmt = update(d).where(d.c.recipient_id == recipient_id, d.c.status.in_(("pending", "sending")))
        if kinds is not None:
            stmt = stmt.where(d.c.kind.in_(kinds))
        await session.execute(stmt.values(status="suppressed", lease_until=None))

    def footer(self, member_id: str) -> dict[str, str]:
        """Links every email to a member carries: their preferences and one-click unsubscribe."""
        base, secret = self.settings.public_base_url, self.settings.secret_key
        return {
            "preferences_url": tokens.member_link(secret, base, tokens.PREFERENCES, member_id),
            "unsubscribe_url": tokens.member_link(secret, base, tokens.UNSUBSCRIBE, member_id),
        }

    async def queue_many(self, uow: UnitOfWork, rows: list[dict[str, Any]]) -> None:
        """`queue` for several deliveries with one round trip (each skipped when already queued)."""
        if not rows:
            return
        await uow.session.execute(_QUEUE_DELIVERY, [_delivery(row) for row in rows])
        uow.on_commit(self.deliveries_queued.set)

    async def queue(self, uow: UnitOfWork, **row: Any) -> bool:
        """Queue one delivery; False when that (kind, subject, recipient) was already queued."""
        result = await uow.session.execute(_QUEUE_DELIVERY.returning(tables.deliveries.c.id), _delivery(row))
        queued = result.first() is not None
        if queued:
            uow.on_commit(self.deliveries_queued.set)
        return queued


_MIRRORED = (
    "email",
    "address_key",
    "name",
    "email_consent",
    "status",
    "region_id",
    "group_ids",
    "subteam_ids",
    "engagement_level",
    "interests",
    "joined_at",
)
_upsert = pg_insert(tables.recipients)
# A member's row in the mirror, new or again (executed with many rows at once: one prepared statement).
_UPSERT_RECIPIENT = _upsert.on_conflict_do_update(
    index_elements=[tables.recipients.c.member_id], set_={c: _upsert.excluded[c] for c in _MIRRORED}
)
_QUEUE_DELIVERY = pg_insert(tables.deliveries).on_conflict_do_nothing(constraint="uq_deliveries_kind_subject_recipient")


def meeting_line(meeting: Any) -> dict[str, str]:
    """A meeting as an email lists it: title, when (in its own time zone), where, and its public page."""
    return {
        "title": meeting.title,
        "when": format_when(meeting.starts_at, meeting.timezone),
        "venue": meeting.venue or "",
        "public_url": meeting.public_url,
    }


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    """A delivery row with its id, its subject on one line, and its priority (bulk emails after what people are
    waiting for)."""
    row.setdefault("id", str(uuid.uuid4()))
    row["subject"] = one_line(row["subject"])
    row.setdefault("priority", 1 if row["kind"] in BULK_KINDS else 0)
    return row
