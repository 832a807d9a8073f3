"""Announcing a new meeting to every member in its scope who wants such email, in batches.

Each batch is one transaction: it queues deliveries for the next members after the job's cursor (by
member id) and moves the cursor. A crash loses at most the batch in flight, which the restart redoes;
the unique delivery key (kind, meeting, member) makes a redone batch queue nothing twice. Sending is
the delivery worker's job, throttled to the relay's rate.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.meetings import format_when
from services.notifications.service import NotificationService, first_name_of
from shared import tokens
from shared.logging import get_logger

log = get_logger(__name__)
ANNOUNCEMENT_TOPIC = "meetings"  # the kind of email a member can opt out of in their preferences


class AnnouncementFanOut:
    def __init__(self, service: NotificationService, *, batch_size: int = 500, poll_interval_s: float = 1.0) -> None:
        self.service = service
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                worked = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("announcement fan-out pass failed", error=repr(exc))
                worked = False
            if not worked:
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=self.poll_interval_s)
                except TimeoutError:
                    pass
                self.wake.clear()

    async def step(self) -> bool:
        """Queue one batch of one announcement; False when there is nothing to do."""
        a = tables.announcements
        async with self.service.db.transaction() as session:
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
            if meeting is None or meeting["status"] == "cancelled" or meeting["starts_at"] < datetime.now(UTC):
                await session.execute(update(a).where(a.c.meeting_id == job["meeting_id"]).values(status="cancelled"))
                return True
            batch = await self._next_recipients(session, meeting, job["cursor"])
            queued = 0
            for member in batch:
                if not member["suppressed"]:
                    queued += await self._queue(session, meeting, member, job["correlation_id"])
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
            self.service.deliveries_queued.set()
        return True

    async def _meeting(self, session: AsyncSession, meeting_id: str) -> dict[str, Any] | None:
        m = tables.meetings
        row = (await session.execute(select(m).where(m.c.meeting_id == meeting_id))).mappings().first()
        return dict(row) if row else None

    async def _next_recipients(
        self, session: AsyncSession, meeting: dict[str, Any], cursor: str | None
    ) -> list[dict[str, Any]]:
        r, s = tables.recipients, tables.suppressions
        conditions = [
            r.c.email.is_not(None),
            r.c.email_consent.is_(True),
            r.c.status == "confirmed",
            or_(r.c.email_topics.is_(None), r.c.email_topics.any(ANNOUNCEMENT_TOPIC)),
        ]
        scope_type, scope_id = meeting["scope_type"], meeting["scope_id"]
        if scope_type == "region":
            conditions.append(r.c.region_id == scope_id)
        elif scope_type == "group":
            conditions.append(r.c.group_ids.any(scope_id))
        elif scope_type == "subteam":
            conditions.append(r.c.subteam_ids.any(scope_id))
        if cursor:
            conditions.append(r.c.member_id > cursor)
        rows = await session.execute(
            select(r.c.member_id, r.c.email, r.c.name)
            .where(and_(*conditions))
            .order_by(r.c.member_id)
            .limit(self.batch_size)
        )
        batch = [dict(row) for row in rows.mappings()]
        # The suppression list holds keyed hashes, so it is checked here rather than joined in SQL.
        keys = {m["member_id"]: self.service.suppressions.address_key(m["email"]) for m in batch}
        suppressed = set((await session.execute(select(s.c.email).where(s.c.email.in_(list(keys.values()))))).scalars())
        return [{**m, "suppressed": keys[m["member_id"]] in suppressed} for m in batch]

    async def _queue(
        self, session: AsyncSession, meeting: dict[str, Any], member: dict[str, Any], cid: str | None
    ) -> int:
        service = self.service
        secret = service.settings.secret_key
        rsvp_url = f"{meeting['public_url']}?member={tokens.sign(secret, 'events-member', {'m': member['member_id']})}"
        text_body, html_body = service.renderer.render(
            "announcement",
            name=first_name_of(member["name"]),
            meeting=meeting,
            when=format_when(meeting),
            rsvp_url=rsvp_url,
            **service.footer(member["member_id"]),
        )
        return int(
            await service.queue(
                session,
                kind="announcement",
                subject_ref=meeting["meeting_id"],
                recipient_id=member["member_id"],
                recipient_email=member["email"],
                subject=f"New: {meeting['title']}, {format_when(meeting)}",
                body_text=text_body,
                body_html=html_body,
                correlation_id=cid,
            )
        )
