"""Meeting reminders: due times kept in the database when a meeting is scheduled or moved, each published once.

A background loop publishes MeetingReminderDue as reminders fall due; it sleeps until the next one (or the poll
interval) and is woken early when a meeting's reminders change.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from services.events import queries
from services.events.domain import reminder_due_times, reminder_wait
from services.events.queries import utcnow
from shared.events import catalog as ev
from shared.logging import get_logger
from shared.uow import UnitOfWork, UnitsOfWork

log = get_logger(__name__)


class Reminders:
    def __init__(self, uows: UnitsOfWork) -> None:
        self.uows = uows
        self.changed = asyncio.Event()  # set once a meeting's reminders change: the loop looks again

    async def plan(self, uow: UnitOfWork, meeting: Any) -> None:
        """Replace the meeting's pending reminders by those still worth sending; wake the loop once committed."""
        due = reminder_due_times(meeting.starts_at, list(meeting.reminder_offsets), utcnow())
        await queries.replace_pending_reminders(uow.session, meeting.id, due)
        uow.on_commit(self.changed.set)

    async def publish_due(self, limit: int = 100) -> int:
        """Publish each due reminder once: claimed with SKIP LOCKED, marked published in the same transaction."""
        async with self.uows.begin() as uow:
            rows = await queries.claim_due_reminders(uow.session, limit)
            if not rows:
                return 0
            await uow.emit(*[
                ev.MeetingReminderDue(meeting_id=row.meeting_id, reminder_id=row.id,
                                      minutes_before=row.minutes_before, starts_at=row.starts_at)
                for row in rows
            ])
            await queries.mark_reminders_published(uow.session, [row.id for row in rows])
        return len(rows)

    async def next_due(self) -> datetime | None:
        async with self.uows.begin() as uow:
            return await queries.next_reminder_due(uow.session)


class ReminderLoop:
    """Background task: publishes reminders as they fall due; sleeps until the next one or the poll interval."""

    def __init__(self, reminders: Reminders, poll_interval_s: float = 5.0) -> None:
        self.reminders = reminders
        self.poll_interval_s = poll_interval_s

    async def run(self) -> None:
        while True:
            try:
                while await self.reminders.publish_due() > 0:
                    pass
                next_due = await self.reminders.next_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reminder pass failed; will retry", error=repr(exc))
                next_due = None
            wait = reminder_wait(next_due, now=utcnow(), poll_interval_s=self.poll_interval_s)
            self.reminders.changed.clear()
            try:
                await asyncio.wait_for(self.reminders.changed.wait(), timeout=wait)
            except TimeoutError:
                pass
