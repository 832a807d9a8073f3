"""Sending: due deliveries go out through SMTP once each, throttled, with unsubscribe headers and attachments.

Several senders (one SMTP connection each) run per process and any number of processes may run: each
delivery is locked with FOR UPDATE SKIP LOCKED while it is sent, and committed as sent at the relay's
point of acceptance (see mailer.py), so a crash or a second instance never sends one twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.mailer import Mailer, OutgoingEmail, PermanentFailure, TemporaryFailure
from services.notifications.suppression import MARKETING_KINDS, Suppressions
from shared import metrics, tokens
from shared.config import Settings
from shared.db import Database
from shared.events.catalog import NotificationFailed, NotificationSent
from shared.logging import correlation_id_var, get_logger
from shared.outbox import Outbox

log = get_logger(__name__)

# What a kind of email attaches, computed when it is sent: (session, delivery row) -> [(name, mime, bytes)].
AttachmentProvider = Callable[[AsyncSession, Any], Awaitable[list[tuple[str, str, bytes]]]]

HARD_FAILURES_BEFORE_SUPPRESSION = 3

CLAIM_SQL = text(
    "UPDATE deliveries SET status = 'sending', lease_until = now() + make_interval(secs => :lease_s) "
    "WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now() "
    "ORDER BY priority, next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) "
    "RETURNING id, kind, subject_ref, recipient_id, recipient_email, subject, body_text, body_html, attempts, "
    "correlation_id, next_attempt_at, reply_to"
)
RELEASE_SQL = text(
    "UPDATE deliveries SET status = 'pending', lease_until = NULL WHERE status = 'sending' AND lease_until < now()"
)


class LeaseLost(Exception):
    """This sender's lease on a delivery ran out and the delivery went to another sender."""


class RateLimiter:
    """A token bucket shared by a process's senders: at most `per_second` emails a second (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.per_second <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(self._next, now) + 1.0 / self.per_second


class DeliveryWorker:
    """Sends due deliveries over `connections` SMTP connections."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        settings: Settings,
        wake: asyncio.Event,
        *,
        connections: int = 1,
        max_attempts: int = 8,
        poll_interval_s: float = 1.0,
        mailer_factory: Callable[[], Mailer] | None = None,
        batch_size: int = 20,
        lease_s: float = 30.0,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.settings = settings
        self.wake = wake
        self.connections = max(1, connections)
        self.max_attempts = max_attempts
        self.poll_interval_s = poll_interval_s
        self.mailer_factory = mailer_factory or (lambda: Mailer(settings))
        self.limiter = RateLimiter(settings.smtp_max_per_second)
        self.suppressions = Suppressions(settings.secret_key)
        self.attachments: dict[str, AttachmentProvider] = {}
        self.service = settings.service_name
        # A batch must be sent well within its lease, even at the relay's allowed rate.
        rate = settings.smtp_max_per_second
        self.batch_size = max(1, min(batch_size, int(rate * lease_s / 3))) if rate > 0 else batch_size
        self.lease_s = lease_s

    def attach_for(self, kind: str, provider: AttachmentProvider) -> None:
        self.attachments[kind] = provider

    async def run(self) -> None:
        """Run the senders, and the reaper of expired leases, until cancelled."""
        await asyncio.gather(self._reaper(), *(self._sender(self.mailer_factory()) for _ in range(self.connections)))

    async def _reaper(self) -> None:
        while True:
            try:
                if await self.release_expired_leases():
                    self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("releasing expired delivery leases failed", error=repr(exc))
            await asyncio.sleep(self.lease_s / 4)

    async def _sender(self, mailer: Mailer) -> None:
        try:
            while True:
                try:
                    sent = await self.send_due(mailer)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("delivery pass failed", error=repr(exc))
                    await asyncio.sleep(self.poll_interval_s)
                    sent = 0
                if sent == 0:
                    try:
                        await asyncio.wait_for(self.wake.wait(), timeout=self.poll_interval_s)
                    except TimeoutError:
                        pass
                    self.wake.clear()
        finally:
            await mailer.close()

    async def send_due(self, mailer: Mailer, limit: int = 500) -> int:
        """Claim and send due deliveries in batches; return how many were handled."""
        handled = 0
        while handled < limit:
            batch = await self.claim(self.batch_size)
            if not batch:
                break
            for row in batch:
                await self.deliver(mailer, row)
            handled += len(batch)
        return handled

    async def claim(self, n: int) -> list[Any]:
        """Lease up to `n` due deliveries to this sender (status 'sending' until the lease ends)."""
        async with self.db.transaction() as session:
            rows = await session.execute(CLAIM_SQL, {"n": n, "lease_s": self.lease_s})
            return list(rows.all())

    async def release_expired_leases(self) -> int:
        """Deliveries whose sender died are due again. The one it was sending when it died was either
        committed as sent (the relay then got its final '.') or not (the relay discarded it): no duplicate."""
        async with self.db.transaction() as session:
            result = await session.execute(RELEASE_SQL)
        return int(getattr(result, "rowcount", 0) or 0)

    async def deliver(self, mailer: Mailer, row: Any) -> None:
        """Send one leased delivery and commit it as sent at the relay's point of acceptance."""
        table = tables.deliveries
        mine = (table.c.id == row.id) & (table.c.status == "sending")
        token = correlation_id_var.set(row.correlation_id)
        try:
            async with self.db.sessions() as session:
                await session.begin()
                if await self.suppressions.blocks(session, row.recipient_email, row.kind):
                    await session.execute(update(table).where(mine).values(status="suppressed", lease_until=None))
                    await session.commit()
                    return
                email = await self._email(session, row)
                await session.commit()
                await self.limiter.wait()
                attempts = row.attempts + 1
                commit: asyncio.Future[None] | None = None

                async def commit_as_sent() -> None:
                    nonlocal commit
                    await session.begin()
                    now = datetime.now(UTC)
                    still_mine = await session.execute(
                        update(table)
                        .where(mine)
                        .values(status="sent", attempts=attempts, sent_at=now, lease_until=None)
                        .returning(table.c.id)
                    )
                    if still_mine.first() is None:
                        await session.rollback()
                        raise LeaseLost(row.id)  # another sender has it now: abandon this copy before its '.'
                    await self.outbox.add_events(
                        session,
                        [
                            NotificationSent(
                                delivery_id=row.id, kind=row.kind, recipient_id=row.recipient_id, sent_at=now
                            )
                        ],
                        correlation_id=row.correlation_id,
                    )
                    # COMMIT goes to PostgreSQL and the final '.' to the relay in consecutive steps of the event
                    # loop with nothing between them: the commit task's first step writes COMMIT, and the mailer
                    # writes '.' as soon as this returns. A crash then leaves both or neither in the kernel's
                    # buffers, which deliver them even after the process is gone.
                    commit = asyncio.ensure_future(session.commit())
                    await asyncio.sleep(0)

                try:
                    await mailer.send(email, commit_point=commit_as_sent)
                    metrics.EMAILS_SENT.labels(self.service, row.kind).inc()
                except LeaseLost:
                    log.warning("delivery lease lost; left to its new sender", delivery_id=row.id)
                except (TemporaryFailure, PermanentFailure) as exc:
                    if commit is not None:
                        await commit  # recorded as sent, then refused at the '.': correct the record
                    await session.begin()
                    await self._record_failure(session, row, exc, attempts)
                    await session.commit()
                else:
                    if commit is not None:
                        await commit
        finally:
            correlation_id_var.reset(token)

    async def _email(self, session: AsyncSession, row: Any) -> OutgoingEmail:
        headers: dict[str, str] = {}
        if row.kind in MARKETING_KINDS:
            # RFC 8058 one-click unsubscribe, honoured by membership (which owns consent).
            url = tokens.member_link(
                self.settings.secret_key, self.settings.public_base_url, tokens.UNSUBSCRIBE, row.recipient_id
            )
            headers["List-Unsubscribe"] = f"<{url}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if row.reply_to:
            headers["Reply-To"] = row.reply_to
        provider = self.attachments.get(row.kind)
        attachments = await provider(session, row) if provider else []
        return OutgoingEmail(
            to=row.recipient_email,
            subject=row.subject,
            text=row.body_text,
            html=row.body_html,
            headers=headers,
            attachments=attachments,
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
                lease_until=None,
            )
        )
        metrics.EMAILS_FAILED.labels(self.service, row.kind, "false").inc()
        log.info("delivery deferred", delivery_id=row.id, error=str(exc), retry_in_s=backoff.total_seconds())

    async def _fail(self, session: AsyncSession, row: Any, error: str, attempts: int, *, permanent: bool) -> None:
        table = tables.deliveries
        await session.execute(
            update(table)
            .where(table.c.id == row.id)
            .values(status="failed", attempts=attempts, last_error=error[:2000], lease_until=None)
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
        if permanent and row.recipient_email:
            await self._count_hard_failure(session, row.recipient_email)
        metrics.EMAILS_FAILED.labels(self.service, row.kind, str(permanent).lower()).inc()
        log.warning("delivery failed", delivery_id=row.id, error=error, permanent=permanent)

    async def _count_hard_failure(self, session: AsyncSession, email: str) -> None:
        """Repeated permanent refusals suppress the address: a relay's reputation depends on it."""
        health = tables.address_health
        key = self.suppressions.address_key(email)
        failures = (
            await session.execute(
                pg_insert(health)
                .values(email=key, hard_failures=1, last_failure_at=datetime.now(UTC))
                .on_conflict_do_update(
                    index_elements=[health.c.email],
                    set_={"hard_failures": health.c.hard_failures + 1, "last_failure_at": datetime.now(UTC)},
                )
                .returning(health.c.hard_failures)
            )
        ).scalar_one()
        if failures >= HARD_FAILURES_BEFORE_SUPPRESSION:
            await self.suppressions.suppress(session, email, "hard_bounces")
