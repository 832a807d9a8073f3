"""Notifications' use cases: keep the mirror of who may be emailed, and queue each email exactly once."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import escape
from sqlalchemy import delete, select, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.notifications import db as tables
from services.notifications.suppression import BULK_KINDS, MARKETING_KINDS, Suppressions
from shared import tokens
from shared.config import Settings
from shared.crypto import KeyStore, decode_key, unseal
from shared.db import Database
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
from shared.outbox import Outbox
from shared.parking import ParkingLot

log = get_logger(__name__)
# A subject's key, whether it was destroyed (erased), and whether events wait for it (see key_ready).
KEY_STATES_SQL = text(
    "SELECT i.id, k.key, k.destroyed_at IS NOT NULL, EXISTS (SELECT 1 FROM parked_events p WHERE p.subject_id = i.id) "
    "FROM unnest(CAST(:ids AS text[])) AS i(id) LEFT JOIN subject_keys k ON k.key_id = i.id"
)
EMAIL_TEMPLATES = Path(__file__).parent / "templates" / "email"


class EmailRenderer:
    def __init__(self, network_name: str) -> None:
        self.network_name = network_name
        self.text_env = Environment(loader=FileSystemLoader(str(EMAIL_TEMPLATES)), undefined=StrictUndefined)
        self.html_env = Environment(
            loader=FileSystemLoader(str(EMAIL_TEMPLATES)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
        )

    def render(self, template: str, **context: object) -> tuple[str, str]:
        """The plain-text and HTML parts of email `template` (templates/email/<template>.txt and .html)."""
        context = {"network_name": self.network_name, **context}
        return (
            self.text_env.get_template(f"{template}.txt").render(context),
            self.html_env.get_template(f"{template}.html").render(context),
        )

    def stencil(self, template: str, slots: tuple[str, ...], **context: object) -> Stencil:
        """Email `template` rendered once, with the per-recipient `slots` left as holes for `Stencil.fill`."""
        marks = {slot: f"@@{_STENCIL_MARK}:{slot}@@" for slot in slots}
        text, html = self.render(template, **context, **marks)
        return Stencil(_split(text), _split(html))


_STENCIL_MARK = uuid.uuid4().hex
_STENCIL_RE = re.compile(f"@@{_STENCIL_MARK}:(\\w+)@@")


def _split(rendered: str) -> list[str]:
    """Literal text and slot names, alternating (even indexes literal)."""
    return _STENCIL_RE.split(rendered)


class Stencil:
    """An email rendered once for many recipients: filling it in is string joins, not a template render.
    A slot's value is put in as the template puts a plain `{{ slot }}`: as it is in the text part, escaped in
    the HTML part. (Check a template with `matches` before relying on that.)"""

    def __init__(self, text_parts: list[str], html_parts: list[str]) -> None:
        self.text_parts = text_parts
        self.html_parts = html_parts

    def fill(self, **values: str) -> tuple[str, str]:
        return _fill(self.text_parts, values, False), _fill(self.html_parts, values, True)

    def matches(self, renderer: EmailRenderer, template: str, values: dict[str, str], **context: object) -> bool:
        """Whether filling in `values` gives exactly what rendering the template with them gives."""
        return self.fill(**values) == renderer.render(template, **context, **values)


def _fill(parts: list[str], values: dict[str, str], html: bool) -> str:
    out = parts[:]
    for i in range(1, len(out), 2):
        value = values[out[i]]
        out[i] = str(escape(value)) if html else value
    return "".join(out)


# Waking the delivery worker (or the fan-out) only once the transaction that queued the work has committed: a
# worker woken before would find nothing yet and go back to waiting for its poll.
_WAKE_ON_COMMIT = "groundswell.wake_on_commit"


@sa_event.listens_for(Session, "after_commit")
def _wake_on_commit(session: Session) -> None:
    events = session.info.pop(_WAKE_ON_COMMIT, None)
    for ev in events or ():
        ev.set()


def wake_after_commit(session: AsyncSession, event: asyncio.Event) -> None:
    """Set `event` when `session`'s transaction commits (never if it rolls back)."""
    session.sync_session.info.setdefault(_WAKE_ON_COMMIT, set()).add(event)


class NotificationService:
    """Keeps the mirror of who may be emailed and queues each email once."""

    def __init__(self, db: Database, outbox: Outbox, settings: Settings) -> None:
        self.db = db
        self.outbox = outbox
        self.settings = settings
        self.keys = KeyStore(tables.subject_keys, owner="membership")
        self.parking = ParkingLot(tables.parked_events)
        self.suppressions = Suppressions(settings.secret_key)
        self.renderer = EmailRenderer(settings.network_name)
        # Set once a transaction that queued deliveries (or an announcement to fan out) has committed.
        self.deliveries_queued = asyncio.Event()
        self.announcements_queued = asyncio.Event()
        # Handlers of events parked until a key arrived, by event type (meetings.py, digests.py add theirs).
        self.parked_handlers: dict[str, ParkedHandler] = {}
        for model, handler in (
            (MemberJoined, self.member_joined),
            (MemberConfirmed, self.member_confirmed),
            (MemberProfileUpdated, self.profile_updated),
            (ConsentChanged, self.consent_changed),
            (MemberLeft, self.member_left),
        ):
            self.parked_handlers[model.event_type] = parked_handler(model, handler)

    # keys ------------------------------------------------------------------------------------------
    async def remember_key(self, session: AsyncSession, key_id: str, key_b64: str) -> None:
        """Keep a subject's key (a member's or an RSVP's), then handle whatever waited for it."""
        await self.remember_keys(session, [(key_id, key_b64)])

    async def remember_keys(self, session: AsyncSession, keys: list[tuple[str, str]]) -> None:
        """`remember_key` for several subjects (each once), with three statements for all of them: the keys are
        all kept before the events that waited for them are handled, subject by subject, in the given order."""
        ids = [key_id for key_id, _ in keys]
        await self.parking.lock_subjects(session, ids)
        await self.keys.put_many(session, {key_id: decode_key(key_b64) for key_id, key_b64 in keys})
        released = await self.parking.release_many(session, ids)
        # The joins that waited for their keys (the common case under load: MemberJoined and its key travel on
        # different topics, and the join often comes first) are welcomed as one run; anything else one by one.
        joins: list[tuple[Envelope, MemberJoined]] = []
        for key_id in ids:
            for envelope in released.get(key_id, ()):
                if envelope.type == MemberJoined.event_type and len(released[key_id]) == 1:
                    joins.append((envelope, MemberJoined.model_validate(envelope.data)))
                    continue
                await self._flush_released(session, joins)
                handler = self.parked_handlers.get(envelope.type)
                if handler is not None:
                    await handler(session, envelope)
        await self._flush_released(session, joins)

    async def _flush_released(self, session: AsyncSession, joins: list[tuple[Envelope, MemberJoined]]) -> None:
        if joins:
            await self.members_joined(session, list(joins))
            joins.clear()

    async def forget_key(self, session: AsyncSession, key_id: str) -> None:
        await self.keys.destroy(session, key_id)

    async def key_ready(self, session: AsyncSession, envelope: Envelope, key_id: str) -> bool:
        """True when the handler may read `key_id`'s sealed fields now; otherwise the event is parked (or,
        when the key was destroyed, dropped). Later events of a subject with parked ones wait too, in order."""
        return await self.ready_key(session, envelope, key_id) is not None

    async def ready_key(self, session: AsyncSession, envelope: Envelope, key_id: str) -> bytes | None:
        """`key_ready`, returning the key itself (one query for the key, its erasure and parked events)."""
        return (await self.ready_keys(session, [(envelope, key_id)])).get(key_id)

    async def ready_keys(self, session: AsyncSession, waiting: list[tuple[Envelope, str]]) -> dict[str, bytes]:
        """`ready_key` for several events, each with the key it needs (each key once), with three statements for
        all of them: the keys of those that may go ahead; the others are parked (or dropped), in the given order."""
        ids = [key_id for _, key_id in waiting]
        await self.parking.lock_subjects(session, ids)
        states = {row[0]: row[1:] for row in (await session.execute(KEY_STATES_SQL, {"ids": ids})).all()}
        ready: dict[str, bytes] = {}
        parked_now: list[tuple[Envelope, str]] = []
        for envelope, key_id in waiting:
            key, destroyed, parked = states[key_id]
            if destroyed:
                continue
            if key is None or parked:
                parked_now.append((envelope, key_id))
            else:
                ready[key_id] = bytes(key)
        await self.parking.park_many(session, parked_now, reason="key not received yet")
        return ready

    async def _unseal(self, session: AsyncSession, sealed: Sealed | None, key_id: str, key: bytes) -> str | None:
        """A sealed field, with the subject's key in hand when it is sealed with that key."""
        if sealed is not None and sealed.key_id == key_id:
            return unseal(sealed, key)
        return await self.keys.unseal(session, sealed)

    # members ---------------------------------------------------------------------------------------
    async def member_joined(self, session: AsyncSession, envelope: Envelope, event: MemberJoined) -> None:
        """Mirror the new member and queue their welcome email (with a confirmation link when needed)."""
        await self.members_joined(session, [(envelope, event)])

    async def members_joined(self, session: AsyncSession, joins: list[tuple[Envelope, MemberJoined]]) -> None:
        """`member_joined` for a run of joins (each member once), with one statement per step for all of them."""
        keys = await self.ready_keys(session, [(envelope, event.member_id) for envelope, event in joins])
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
                    "name": name,
                    "email_consent": event.email_consent,
                    "status": "pending" if event.confirmation_required else "confirmed",
                    "region_id": event.region_id,
                    "group_ids": event.group_ids,
                    "subteam_ids": event.subteam_ids,
                    "engagement_level": event.engagement_level,
                    "joined_at": event.joined_at,
                }
            )
            if event.email_consent and email:
                consented.append(self.suppressions.address_key(email))
            confirm_url = None
            if event.confirmation_required:
                token = tokens.sign(self.settings.secret_key, tokens.CONFIRM_EMAIL, {"m": event.member_id})
                confirm_url = f"{self.settings.public_base_url}/join/confirm?token={token}"
            first_name = first_name_of(name)
            body_text, body_html = self.renderer.render(
                "welcome", name=first_name, confirm_url=confirm_url, **self.footer(event.member_id)
            )
            welcomes.append(
                {
                    "kind": "welcome",
                    "subject_ref": event.member_id,
                    "recipient_id": event.member_id,
                    "recipient_email": email,
                    "subject": f"Welcome to {self.settings.network_name}, {first_name}",
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
        await self.queue_many(session, welcomes)

    async def member_confirmed(self, session: AsyncSession, envelope: Envelope, event: MemberConfirmed) -> None:
        if not await self.key_ready(session, envelope, event.member_id):
            return
        r = tables.recipients
        await session.execute(update(r).where(r.c.member_id == event.member_id).values(status="confirmed"))

    async def profile_updated(self, session: AsyncSession, envelope: Envelope, event: MemberProfileUpdated) -> None:
        if not await self.key_ready(session, envelope, event.member_id):
            return
        r = tables.recipients
        values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        if event.name is not None:
            values["name"] = await self.keys.unseal(session, event.name)
        if event.email is not None:
            values["email"] = await self.keys.unseal(session, event.email)
        for field in ("region_id", "group_ids", "subteam_ids", "engagement_level"):
            if field in event.changed or field.removesuffix("_id") in event.changed:
                values[field] = getattr(event, field)
        await session.execute(update(r).where(r.c.member_id == event.member_id).values(**values))

    async def consent_changed(self, session: AsyncSession, envelope: Envelope, event: ConsentChanged) -> None:
        """Unsubscribing takes effect at once: the address joins the suppression list in this transaction."""
        if not await self.key_ready(session, envelope, event.member_id):
            return
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

    async def member_left(self, session: AsyncSession, envelope: Envelope, event: MemberLeft) -> None:
        if not await self.key_ready(session, envelope, event.member_id):
            return
        r = tables.recipients
        email = await self._email_of(session, event.member_id)
        await session.execute(update(r).where(r.c.member_id == event.member_id).values(status="left"))
        await self.suppressions.suppress(session, email, "left")
        await self._cancel_pending(session, event.member_id, None)

    async def member_erased(self, session: AsyncSession, envelope: Envelope, event: MemberErased) -> None:
        """Forget everything personal about the member here; keep only a keyed hash so they are never emailed."""
        email = await self._email_of(session, event.member_id)
        await self.suppressions.suppress(session, email, "erased")
        await self._cancel_pending(session, event.member_id, None)
        await session.execute(delete(tables.recipients).where(tables.recipients.c.member_id == event.member_id))
        d = tables.deliveries
        await session.execute(
            update(d)
            .where(d.c.recipient_id == event.member_id)
            .values(recipient_email=None, body_text="", body_html=None, subject="(erased)")
        )
        rv = tables.rsvps
        await session.execute(update(rv).where(rv.c.member_id == event.member_id).values(email=None, name=None))
        await session.execute(delete(tables.parked_events).where(tables.parked_events.c.subject_id == event.member_id))
        await self.keys.destroy(session, event.member_id)

    async def _email_of(self, session: AsyncSession, member_id: str) -> str | None:
        r = tables.recipients
        return (await session.execute(select(r.c.email).where(r.c.member_id == member_id))).scalar()

    async def _cancel_pending(self, session: AsyncSession, recipient_id: str, kinds: frozenset[str] | None) -> None:
        """Stop the recipient's deliveries not sent yet, those a sender has claimed too: its commit point then
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

    async def queue_many(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        """`queue` for several deliveries with one round trip (each skipped when already queued)."""
        if not rows:
            return
        await session.execute(_QUEUE_DELIVERY, [_delivery(row) for row in rows])
        wake_after_commit(session, self.deliveries_queued)

    async def queue(self, session: AsyncSession, **row: Any) -> bool:
        """Queue one delivery; False when that (kind, subject, recipient) was already queued."""
        result = await session.execute(_QUEUE_DELIVERY.returning(tables.deliveries.c.id), _delivery(row))
        queued = result.first() is not None
        if queued:
            wake_after_commit(session, self.deliveries_queued)
        return queued


_MIRRORED = ("email", "name", "email_consent", "status", "region_id", "group_ids", "subteam_ids", "engagement_level",
             "joined_at")
_upsert = pg_insert(tables.recipients)
# A member's row in the mirror, new or again (executed with many rows at once: one prepared statement).
_UPSERT_RECIPIENT = _upsert.on_conflict_do_update(
    index_elements=[tables.recipients.c.member_id], set_={c: _upsert.excluded[c] for c in _MIRRORED}
)
_QUEUE_DELIVERY = pg_insert(tables.deliveries).on_conflict_do_nothing(constraint="uq_deliveries_kind_subject_recipient")


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    """A delivery row with its id and its priority (bulk emails after what people are waiting for)."""
    row.setdefault("id", str(uuid.uuid4()))
    row.setdefault("priority", 1 if row["kind"] in BULK_KINDS else 0)
    return row


def first_name_of(name: str | None) -> str:
    return (name or "").split(" ")[0] or "friend"


ParkedHandler = Callable[[AsyncSession, Envelope], Awaitable[None]]


def parked_handler(model: Any, handler: Callable[[AsyncSession, Envelope, Any], Awaitable[None]]) -> ParkedHandler:
    """Adapt `handler(session, envelope, event)` to take a released envelope."""

    async def run(session: AsyncSession, envelope: Envelope) -> None:
        await handler(session, envelope, model.model_validate(envelope.data))

    return run
