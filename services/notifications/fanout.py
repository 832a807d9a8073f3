"""Announcing a new meeting to every member in its scope who wants such email, in batches.

Each batch is one transaction: it queues deliveries for the next members after the job's cursor (by
member id) and moves the cursor. A crash loses at most the batch in flight, which the restart redoes;
the unique delivery key (kind, meeting, member) makes a redone batch queue nothing twice. Sending is
the delivery worker's job, throttled to the relay's rate.

The announcement is rendered once a batch with holes for what differs between members (their first name
and their three signed links), checked against a full render for the batch's first member; each member's
email is then a few string joins, and the batch's deliveries are one INSERT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications import queries
from services.notifications.domain import announcement_audience, announcement_goes_ahead, first_name_of
from services.notifications.meetings import format_when
from services.notifications.rendering import Stencil
from services.notifications.service import NotificationService
from shared import tokens
from shared.logging import get_logger

log = get_logger(__name__)
KIND = "announcement"
SLOTS = ("name", "rsvp_url", "preferences_url", "unsubscribe_url")


async def run_passes(
    step: Callable[[], Awaitable[bool]], wake: asyncio.Event, poll_interval_s: float, what: str
) -> None:
    """Run `step` until cancelled: again at once while it finds work, else after `wake` or `poll_interval_s`.
    A failed pass is logged and retried (fan-outs resume from their cursor)."""
    while True:
        try:
            worked = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("background pass failed", loop=what, error=repr(exc))
            worked = False
        if not worked:
            try:
                await asyncio.wait_for(wake.wait(), timeout=poll_interval_s)
            except TimeoutError:
                pass
            wake.clear()


class AnnouncementFanOut:
    def __init__(self, service: NotificationService, *, batch_size: int = 500, poll_interval_s: float = 1.0) -> None:
        self.service = service
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.wake = service.announcements_queued

    async def run(self) -> None:
        await run_passes(self.step, self.wake, self.poll_interval_s, "announcement fan-out")

    async def step(self) -> bool:
        """Queue one batch of one announcement; False when there is nothing to do."""
        a = tables.announcements
        async with self.service.uows.begin() as uow:
            session = uow.session
            job = (
                (
                    await session.execute(
                        select(a)
                        .where(a.c.status.in_(("pending", "running")))
                        .order_by(a.c.created_at)
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    )
                )
                .mappings()
                .first()
            )
            if job is None:
                return False
            meeting = await self._meeting(session, job["meeting_id"])
            now = datetime.now(UTC)
            if meeting is None or not announcement_goes_ahead(meeting["status"], meeting["starts_at"], now):
                await session.execute(update(a).where(a.c.meeting_id == job["meeting_id"]).values(status="cancelled"))
                return True
            batch = await self._next_recipients(session, meeting, job["cursor"])
            queued = await self._queue_batch(
                session, meeting, [m for m in batch if not m["suppressed"]], job["correlation_id"]
            )
            done = len(batch) < self.batch_size
            await session.execute(
                update(a)
                .where(a.c.meeting_id == job["meeting_id"])
                .values(
                    status="done" if done else "running",
                    cursor=batch[-1]["member_id"] if batch else job["cursor"],
                    queued=a.c.queued + queued,
                    finished_at=datetime.now(UTC) if done else None,
                )
            )
            if queued:
                uow.on_commit(self.service.deliveries_queued.set)
        return True

    async def _meeting(self, session: AsyncSession, meeting_id: str) -> dict[str, Any] | None:
        m = tables.meetings
        row = (await session.execute(select(m).where(m.c.meeting_id == meeting_id))).mappings().first()
        return dict(row) if row else None

    async def _next_recipients(
        self, session: AsyncSession, meeting: dict[str, Any], cursor: str | None
    ) -> list[dict[str, Any]]:
        audience = announcement_audience(meeting["scope_type"], meeting["scope_id"])
        batch = await queries.audience_after(session, audience, cursor, self.batch_size)
        # The suppression list holds keyed hashes, so it is checked here rather than joined in SQL.
        keys = {m["member_id"]: self.service.suppressions.address_key(m["email"]) for m in batch}
        suppressed = await queries.suppressed_among(session, list(keys.values()))
        return [{**m, "suppressed": keys[m["member_id"]] in suppressed} for m in batch]

    async def _queue_batch(
        self, session: AsyncSession, meeting: dict[str, Any], members: list[dict[str, Any]], cid: str | None
    ) -> int:
        """Queue the announcement for `members` with one INSERT; return how many were new."""
        if not members:
            return 0
        service = self.service
        when = format_when(meeting)
        wording = await service.wording.current(session)
        stencil: Stencil | None = service.renderer.stencil(KIND, SLOTS, wording=wording, meeting=meeting, when=when)
        emails: list[tuple[str, str, str, str]] = []
        for i, member in enumerate(members):
            values = {"name": first_name_of(member["name"]), "rsvp_url": self._rsvp_url(meeting, member)}
            values.update(service.footer(member["member_id"]))
            if (
                i == 0
                and stencil is not None
                and not stencil.matches(service.renderer, KIND, values, wording=wording, meeting=meeting, when=when)
            ):
                log.warning("announcement template does not fill in as a stencil; rendering each email")
                stencil = None
            if stencil is not None:
                body_text, body_html = stencil.fill(**values)
            else:
                body_text, body_html = service.renderer.render(
                    KIND, wording=wording, meeting=meeting, when=when, **values
                )
            emails.append((member["member_id"], member["email"], body_text, body_html))
        return await queries.queue_batch(
            session,
            kind=KIND,
            subject_ref=meeting["meeting_id"],
            subject=f"New: {meeting['title']}, {when}",
            correlation_id=cid,
            emails=emails,
        )

    def _rsvp_url(self, meeting: dict[str, Any], member: dict[str, Any]) -> str:
        secret = self.service.settings.secret_key
        return f"{meeting['public_url']}?member={tokens.sign(secret, 'events-member', {'m': member['member_id']})}"
