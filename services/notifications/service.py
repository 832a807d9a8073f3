"""Notifications' use cases: keep the recipient mirror, queue deliveries once, send them through SMTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.mailer import Mailer, OutgoingEmail, PermanentFailure, TemporaryFailure
from shared import metrics, tokens
from shared.config import Settings
from shared.crypto import KeyStore, decode_key
from shared.db import Database
from shared.events.catalog import MemberJoined, NotificationFailed, NotificationSent
from shared.events.envelope import Envelope
from shared.logging import correlation_id_var, get_logger
from shared.outbox import Outbox
from shared.parking import ParkingLot

log = get_logger(__name__)
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


class NotificationService:
    def __init__(self, db: Database, outbox: Outbox, settings: Settings) -> None:
        self.db = db
        self.outbox = outbox
        self.settings = settings
        self.keys = KeyStore(tables.subject_keys, owner="membership")
        self.parking = ParkingLot(tables.parked_events)
        self.renderer = EmailRenderer(settings.network_name)
        self.deliveries_queued = asyncio.Event()

    # keys ------------------------------------------------------------------------------------------
    async def remember_key(self, session: AsyncSession, key_id: str, key_b64: str) -> None:
        """Keep a member's key, then handle whatever waited for it."""
        await self.parking.lock_subject(session, key_id)
        await self.keys.put(session, key_id, decode_key(key_b64))
        for envelope in await self.parking.release(session, key_id):
            await self.dispatch(session, envelope)

    async def dispatch(self, session: AsyncSession, envelope: Envelope) -> None:
        """Handle a member event that was parked until its key arrived."""
        if envelope.type == MemberJoined.event_type:
            await self.member_joined(session, envelope, MemberJoined.model_validate(envelope.data))

    async def forget_key(self, session: AsyncSession, key_id: str) -> None:
        await self.keys.destroy(session, key_id)

    # members ---------------------------------------------------------------------------------------
    async def member_joined(self, session: AsyncSession, envelope: Envelope, event: MemberJoined) -> None:
        """Mirror the new member and queue their welcome email (with a confirmation link when needed)."""
        await self.parking.lock_subject(session, event.member_id)
        if await self.keys.get(session, event.member_id) is None:
            if await self.keys.is_destroyed(session, event.member_id):
                return  # erased before we got here: nothing to read, nobody to welcome
            # The key travels on another topic and may still be on its way: wait for it off the partition.
            await self.parking.park(session, envelope, reason="member key not received yet")
            return
        email = await self.keys.unseal(session, event.email)
        name = await self.keys.unseal(session, event.name)
        r = tables.recipients
        await session.execute(
            pg_insert(r)
            .values(
                member_id=event.member_id,
                email=email,
                name=name,
                email_consent=event.email_consent,
                status="pending" if event.confirmation_required else "confirmed",
                region_id=event.region_id,
                engagement_level=event.engagement_level,
            )
            .on_conflict_do_update(
                index_elements=[r.c.member_id],
                set_={"email": email, "name": name, "email_consent": event.email_consent},
            )
        )
        confirm_url = None
        if event.confirmation_required:
            token = tokens.sign(self.settings.secret_key, tokens.CONFIRM_EMAIL, {"m": event.member_id})
            confirm_url = f"{self.settings.public_base_url}/join/confirm?token={token}"
        first_name = (name or "").split(" ")[0] or "friend"
        body_text, body_html = self.renderer.render("welcome", name=first_name, confirm_url=confirm_url)
        await self.queue(
            session,
            kind="welcome",
            subject_ref=event.member_id,
            recipient_id=event.member_id,
            recipient_email=email,
            subject=f"Welcome to {self.settings.network_name}, {first_name}",
            body_text=body_text,
            body_html=body_html,
            correlation_id=envelope.correlation_id,
        )

    async def queue(self, session: AsyncSession, **row: Any) -> bool:
        """Queue one delivery; False when that (kind, subject, recipient) was already queued."""
        d = tables.deliveries
        result = await session.execute(
            pg_insert(d)
            .values(id=str(uuid.uuid4()), **row)
            .on_conflict_do_nothing(constraint="uq_deliveries_kind_subject_recipient")
            .returning(d.c.id)
        )
        queued = result.first() is not None
        if queued:
            self.deliveries_queued.set()
        return queued


class DeliveryWorker:
    """Sends due deliveries. Each is locked (SKIP LOCKED) while sent, so instances never share one."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        mailer: Mailer,
        wake: asyncio.Event,
        *,
        service: str = "notifications",
        max_attempts: int = 8,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.mailer = mailer
        self.wake = wake
        self.service = service
        self.max_attempts = max_attempts
        self.poll_interval_s = poll_interval_s

    async def run(self) -> None:
        while True:
            try:
                sent = await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("delivery pass failed", error=repr(exc))
                sent = 0
            if sent == 0:
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=self.poll_interval_s)
                except TimeoutError:
                    pass
                self.wake.clear()

    async def send_due(self, limit: int = 200) -> int:
        handled = 0
        while handled < limit:
            if not await self.send_one():
                break
            handled += 1
        return handled

    async def send_one(self) -> bool:
        """Lock one due delivery, send it, and commit it as sent at the relay's point of acceptance."""
        table = tables.deliveries
        async with self.db.sessions() as session:
            await session.begin()
            row = (
                await session.execute(
                    text(
                        "SELECT id, kind, recipient_id, recipient_email, subject, body_text, body_html, attempts, "
                        "correlation_id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now() "
                        "ORDER BY next_attempt_at, created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
                    )
                )
            ).first()
            if row is None:
                await session.rollback()
                return False
            token = correlation_id_var.set(row.correlation_id)
            attempts = row.attempts + 1
            committed = False

            async def commit_as_sent() -> None:
                nonlocal committed
                now = datetime.now(UTC)
                await session.execute(
                    update(table).where(table.c.id == row.id).values(status="sent", attempts=attempts, sent_at=now)
                )
                await self.outbox.add_events(
                    session,
                    [NotificationSent(delivery_id=row.id, kind=row.kind, recipient_id=row.recipient_id, sent_at=now)],
                    correlation_id=row.correlation_id,
                )
                await session.commit()
                committed = True

            try:
                await self.mailer.send(self._email(row), commit_point=commit_as_sent)
                metrics.EMAILS_SENT.labels(self.service, row.kind).inc()
            except (TemporaryFailure, PermanentFailure) as exc:
                if committed:
                    await session.begin()  # the relay refused after we recorded it as sent: correct the record
                await self._record_failure(session, row, exc, attempts)
                await session.commit()
            finally:
                correlation_id_var.reset(token)
        return True

    @staticmethod
    def _email(row: Any) -> OutgoingEmail:
        return OutgoingEmail(
            to=row.recipient_email,
            subject=row.subject,
            text=row.body_text,
            html=row.body_html,
            message_id=f"<{row.id}@groundswell.local>",
        )

    async def _record_failure(self, session: AsyncSession, row: Any, exc: Exception, attempts: int) -> None:
        table = tables.deliveries
        permanent = isinstance(exc, PermanentFailure)
        if permanent or attempts >= self.max_attempts:
            await self._fail(session, row, str(exc), attempts, permanent=permanent)
            return
        backoff = timedelta(seconds=min(2**attempts, 3600))
        await session.execute(
            update(table)
            .where(table.c.id == row.id)
            .values(
                status="pending",
                attempts=attempts,
                next_attempt_at=datetime.now(UTC) + backoff,
                last_error=str(exc)[:2000],
            )
        )
        metrics.EMAILS_FAILED.labels(self.service, row.kind, "false").inc()
        log.info("delivery deferred", delivery_id=row.id, error=str(exc), retry_in_s=backoff.total_seconds())

    async def _fail(self, session: AsyncSession, row: Any, error: str, attempts: int, *, permanent: bool) -> None:
        table = tables.deliveries
        await session.execute(
            update(table)
            .where(table.c.id == row.id)
            .values(status="failed", attempts=attempts, last_error=error[:2000])
        )
        await self.outbox.add_events(
            session,
            [
                NotificationFailed(
                    delivery_id=row.id,
                    kind=row.kind,
                    recipient_id=row.recipient_id,
                    error=error[:2000],
                    permanent=permanent,
                )
            ],
            correlation_id=row.correlation_id,
        )
        metrics.EMAILS_FAILED.labels(self.service, row.kind, str(permanent).lower()).inc()
        log.warning("delivery failed", delivery_id=row.id, error=error, permanent=permanent)
