"""Follow-ups after joining, so nobody joins and is then forgotten.

Organisers configure the sequence (`follow_up_steps`: e.g. day 3 meet your local group, day 14 a first
concrete ask). When a member joins, one `follow_ups` row per step is written, due that many days later;
a background pass queues the due ones, or skips them with the reason: the member already took part
(`participation`, filled from RSVPs, attendance and actions taken), left, withdrew consent, opted out of
follow-ups, or their address is suppressed. Each is queued once (kind `follow_up`, subject = step).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications import queries
from services.notifications.domain import FOLLOW_UP_KIND, RECHECK_AFTER, first_name_of, follow_up_decision
from services.notifications.queries import Scope
from services.notifications.service import NotificationService
from services.notifications.wording import EmailSettings, fill, format_when, paragraphs
from shared.errors import InvalidInput
from shared.events.catalog import (
    ActionLinkedToMember,
    ActionTaken,
    MemberErased,
    MemberJoined,
    RsvpLinkedToMember,
)
from shared.events.envelope import Envelope
from shared.logging import get_logger
from shared.uow import UnitOfWork

log = get_logger(__name__)

STEP_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PLACEHOLDERS = ("first_name", "network_name", "group_name", "region_name", "events_url", "campaigns_url")


class InvalidStep(InvalidInput):
    """A follow-up step an organiser cannot save as it is; `errors` maps each field to what to fix."""


@dataclass
class StepInput:
    """A step as an organiser submits it."""

    step_key: str
    day_offset: int
    subject: str
    body: str
    cta_label: str = ""
    cta_url: str = ""
    enabled: bool = True
    position: int = 0

    def validate(self) -> None:
        errors: dict[str, str] = {}
        if not STEP_KEY_RE.match(self.step_key):
            errors["step_key"] = "Use lower-case letters, digits and hyphens (up to 40), like meet-your-group"
        if not 0 <= self.day_offset <= 365:
            errors["day_offset"] = "Enter a number of days between 0 and 365"
        if not self.subject.strip() or len(self.subject) > 200:
            errors["subject"] = "Enter a subject line of up to 200 characters"
        if not self.body.strip():
            errors["body"] = "Enter the text of the email"
        if bool(self.cta_label.strip()) != bool(self.cta_url.strip()):
            errors["cta_url"] = "Give both the button's label and its link, or neither"
        if errors:
            raise InvalidStep(errors)


# A member's follow-up step, once (executed with many rows at once: one prepared statement).
_SCHEDULE_STEP = pg_insert(tables.follow_ups).on_conflict_do_nothing()


class FollowUps:
    """Use cases of follow-up sequences."""

    def __init__(self, notifications: NotificationService, email_settings: EmailSettings) -> None:
        self.notifications = notifications
        self.email_settings = email_settings
        self.uows = notifications.uows
        self.settings = notifications.settings

    # reacting to events ----------------------------------------------------------------------------
    async def member_joined(self, uow: UnitOfWork, envelope: Envelope, event: MemberJoined) -> None:
        """A new member: one row per enabled step, due `day_offset` days after they joined."""
        await self.members_joined(uow, [(envelope, event)])

    async def members_joined(self, uow: UnitOfWork, joins: list[tuple[Envelope, MemberJoined]]) -> None:
        """`member_joined` for several new members: the steps read once, their rows in one round trip."""
        events = [event for _, event in joins]
        session = uow.session
        steps = await self.steps(session, enabled_only=True)
        if not steps or not events:
            return
        rows = [
            {"member_id": e.member_id, "step_key": s.step_key, "due_at": e.joined_at + timedelta(days=s.day_offset)}
            for e in events
            for s in steps
        ]
        await session.execute(_SCHEDULE_STEP, rows)

    async def action_taken(self, uow: UnitOfWork, envelope: Envelope, event: ActionTaken) -> None:
        """Taking an action in a campaign is taking part: later follow-ups are skipped."""
        if event.member_id:
            await took_part(uow.session, event.member_id, event.taken_at)

    async def linked(self, uow: UnitOfWork, envelope: Envelope,
                     event: ActionLinkedToMember | RsvpLinkedToMember) -> None:
        """An action or RSVP made with the member's address before they joined is taking part too."""
        await took_part(uow.session, event.member_id, envelope.occurred_at)

    async def member_erased(self, uow: UnitOfWork, envelope: Envelope, event: MemberErased) -> None:
        await uow.session.execute(delete(tables.follow_ups).where(tables.follow_ups.c.member_id == event.member_id))

    # the configurable sequence ---------------------------------------------------------------------
    async def steps(self, session: AsyncSession, *, enabled_only: bool = False) -> list[Any]:
        s = tables.follow_up_steps
        query = select(s).order_by(s.c.day_offset, s.c.position, s.c.step_key)
        if enabled_only:
            query = query.where(s.c.enabled)
        return list((await session.execute(query)).all())

    async def step(self, session: AsyncSession, step_key: str) -> Any:
        s = tables.follow_up_steps
        return (await session.execute(select(s).where(s.c.step_key == step_key))).first()

    async def save_step(self, uow: UnitOfWork, step: StepInput) -> None:
        """Add a step or change one; members who joined earlier keep the due dates they were given."""
        step.validate()
        s = tables.follow_up_steps
        values = {
            "position": step.position,
            "day_offset": step.day_offset,
            "subject": step.subject.strip(),
            "body": step.body.strip(),
            "cta_label": step.cta_label.strip() or None,
            "cta_url": step.cta_url.strip() or None,
            "enabled": step.enabled,
            "updated_at": datetime.now(UTC),
        }
        await uow.session.execute(
            pg_insert(s)
            .values(step_key=step.step_key, **values)
            .on_conflict_do_update(index_elements=[s.c.step_key], set_=values)
        )

    # sending ---------------------------------------------------------------------------------------
    async def run_due(self, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
        """Queue or skip the follow-ups that are due; returns how many of each."""
        now = now or datetime.now(UTC)
        outcome = {"queued": 0, "skipped": 0, "waiting": 0}
        f = tables.follow_ups
        while True:
            async with self.uows.begin() as uow:
                session = uow.session
                rows = (
                    await session.execute(
                        select(f)
                        .where(
                            f.c.status == "due",
                            f.c.due_at <= now,
                            or_(f.c.handled_at.is_(None), f.c.handled_at <= now - RECHECK_AFTER),
                        )
                        .order_by(f.c.due_at)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                if not rows:
                    return outcome
                steps = {s.step_key: s for s in await self.steps(session)}
                wording = await self.email_settings.load(session)
                upcoming = UpcomingMeetings(now)
                for row in rows:
                    status, reason = await self._handle(uow, row, steps.get(row.step_key), wording, now, upcoming)
                    outcome[status if status != "due" else "waiting"] += 1
                    await session.execute(
                        update(f)
                        .where(f.c.member_id == row.member_id, f.c.step_key == row.step_key)
                        .values(status=status, reason=reason, handled_at=now)
                    )
            if len(rows) < limit:
                return outcome

    async def _handle(
        self, uow: UnitOfWork, row: Any, step: Any, wording: dict[str, str], now: datetime,
        upcoming: UpcomingMeetings,
    ) -> tuple[str, str | None]:
        """('queued' | 'skipped' | 'due', reason) for one due follow-up (domain.follow_up_decision decides)."""
        session = uow.session
        p, r = tables.participation, tables.recipients
        participated = (await session.execute(select(p.c.member_id).where(p.c.member_id == row.member_id))).first()
        recipient = (await session.execute(select(r).where(r.c.member_id == row.member_id))).first()
        email = recipient.email if recipient is not None else None
        status, reason = follow_up_decision(
            step_enabled=step.enabled if step is not None else None,
            took_part=participated is not None,
            recipient=recipient,
            suppressed=await self.notifications.suppressions.blocks(session, email, FOLLOW_UP_KIND),
            due_at=row.due_at,
            now=now,
        )
        if status != "queued" or recipient is None:
            return status, reason
        subject, body_text, body_html = await self.render(session, step, recipient, wording, now, upcoming)
        await self.notifications.queue(
            uow,
            kind=FOLLOW_UP_KIND,
            subject_ref=step.step_key,
            recipient_id=row.member_id,
            recipient_email=recipient.email,
            subject=subject,
            body_text=body_text,
            body_html=body_html,
            correlation_id=f"follow-up-{row.member_id}",
        )
        return "queued", None

    async def render(
        self, session: AsyncSession, step: Any, recipient: Any, wording: dict[str, str], now: datetime,
        upcoming: UpcomingMeetings | None = None,
    ) -> tuple[str, str, str]:
        """Subject, plain text and HTML of one step for one member (the meetings listed are near them; `upcoming`
        is what a pass of follow-ups has read of them)."""
        group_id = recipient.group_ids[0] if recipient.group_ids else None
        group = await queries.unit(session, group_id)
        region = await queries.unit(session, recipient.region_id)
        base = self.settings.public_base_url.rstrip("/")
        where = {"group": group_id} if group else ({"region": recipient.region_id} if region else {})
        values = {
            "first_name": first_name_of(recipient.name),
            "network_name": wording["network_name"],
            "group_name": group.name if group else "Your local group",
            "region_name": region.name if region else "your area",
            "events_url": f"{base}/events" + (f"?{urlencode(where)}" if where else ""),
            "campaigns_url": f"{base}/campaigns",
        }
        scope = Scope("group", group.unit_id) if group else (Scope("region", region.unit_id) if region else None)
        upcoming = upcoming or UpcomingMeetings(now)
        meetings = await upcoming.near(session, scope, limit=3) if scope else []
        for m in meetings:
            m["when"] = format_when(m["starts_at"], m.get("timezone") or "Europe/London")
        body_text, body_html = self.notifications.renderer.render(
            "follow_up",
            network_name=wording["network_name"],
            name=values["first_name"],
            paragraphs=[fill(p, values) for p in paragraphs(step.body)],
            cta_label=fill(step.cta_label or "", values),
            cta_url=fill(step.cta_url or "", values),
            meetings=meetings,
            sign_off=fill(wording["sign_off"], values).splitlines(),
            **self.notifications.footer(recipient.member_id),
        )
        return fill(step.subject, values), body_text, body_html

    async def preview(
        self, session: AsyncSession, step: Any, wording: dict[str, str] | None = None
    ) -> tuple[str, str, str]:
        """A step as a member would get it (a sample member in no group), for the organisers' preview."""
        wording = wording or await self.email_settings.load(session)
        return await self.render(session, step, _SampleRecipient(), wording, datetime.now(UTC))

    async def status_counts(self, session: AsyncSession) -> dict[tuple[str, str], int]:
        """How many follow-ups of each step are due, queued or skipped (for the organisers' page)."""
        f = tables.follow_ups
        rows = await session.execute(select(f.c.step_key, f.c.status, func.count()).group_by(f.c.step_key, f.c.status))
        return {(r[0], r[1]): r[2] for r in rows.all()}


class UpcomingMeetings:
    """The meetings a pass of follow-ups lists, near each member: every scope's meetings that have not started are
    read once a pass (queries.read_upcoming, as the digests do) and each meeting's RSVP counts once, instead of the
    whole meeting history again for every email."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._read: tuple[list[tuple[str, dict[str, Any]]], dict[queries.ScopeKey, list[int]]] | None = None
        self._counts: dict[str, dict[str, int]] = {}

    async def near(self, session: AsyncSession, scope: Scope, *, limit: int) -> list[dict[str, Any]]:
        """queries.upcoming_meetings(scope, now, limit=limit): the scope's soonest, with their RSVP counts."""
        if self._read is None:
            self._read = await queries.read_upcoming(session, self.now)
        meetings, by_scope = self._read
        chosen = [meetings[i] for i in by_scope.get(scope.key, [])[:limit]]
        missing = [meeting_id for meeting_id, _ in chosen if meeting_id not in self._counts]
        if missing:
            self._counts.update(await queries.rsvp_counts(session, missing, None))
        return [{"meeting_id": meeting_id, **detail, **self._counts.get(meeting_id, queries.NO_RSVPS)}
                for meeting_id, detail in chosen]


@dataclass
class _SampleRecipient:
    member_id: str = "00000000-0000-0000-0000-000000000000"
    name: str = "Sam Sample"
    group_ids: tuple[str, ...] = ()
    region_id: str | None = None


async def took_part(session: AsyncSession, member_id: str, at: datetime) -> None:
    """Record that a member took part (as meetings.py does for RSVPs and attendance)."""
    p = tables.participation
    await session.execute(
        pg_insert(p)
        .values(member_id=member_id, first_at=at, last_at=at, count=1)
        .on_conflict_do_update(
            index_elements=[p.c.member_id],
            set_={
                "first_at": func.least(p.c.first_at, at),
                "last_at": func.greatest(p.c.last_at, at),
                "count": p.c.count + 1,
            },
        )
    )


class FollowUpLoop:
    """Queues due follow-ups every `interval_s` seconds, for as long as the service runs."""

    def __init__(self, follow_ups: FollowUps, interval_s: float = 60.0) -> None:
        self.follow_ups = follow_ups
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            try:
                outcome = await self.follow_ups.run_due()
                if outcome["queued"] or outcome["skipped"]:
                    log.info("follow-ups handled", **outcome)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("follow-up pass failed", error=repr(exc))
            await asyncio.sleep(self.interval_s)
