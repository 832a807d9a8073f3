"""The activity log: what happened where (members joining, meetings and their RSVPs, campaigns launched, actions
taken), one row per event, built only from events in the consumer group `notifications.activity`. Organisers'
digests (digests.py) and follow-ups' meeting lists read it (queries.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.notifications import db as tables
from services.notifications import queries
from services.notifications.domain import GONE, arrivals_and_returns
from shared.events.catalog import (
    ActionLinkedToMember,
    ActionTaken,
    CampaignLaunched,
    MeetingCancelled,
    MeetingScheduled,
    MeetingUpdated,
    MemberErased,
    MemberJoined,
    MemberLeft,
    PromotedFromWaitlist,
    RsvpCancelled,
    RsvpReceived,
)
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork

# An activity row, once per event (executed with many rows at once: one prepared statement).
_RECORD_ACTIVITY = pg_insert(tables.activity).on_conflict_do_nothing(index_elements=[tables.activity.c.event_id])


class ActivityLog:
    """The projections of events into the activity log."""

    async def _record(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        kind: str,
        *,
        subject_id: str | None,
        region_id: str | None = None,
        group_id: str | None = None,
        detail: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        await uow.session.execute(
            _RECORD_ACTIVITY,
            {
                "event_id": str(envelope.event_id),
                "kind": kind,
                "occurred_at": occurred_at or envelope.occurred_at,
                "region_id": region_id,
                "group_id": group_id,
                "subject_id": subject_id,
                "detail": detail or {},
            },
        )

    async def member_joined(self, uow: UnitOfWork, envelope: Envelope, event: MemberJoined) -> None:
        await self.members_joined(uow, [(envelope, event)])

    async def members_joined(self, uow: UnitOfWork, joins: list[tuple[Envelope, MemberJoined]]) -> None:
        """`member_joined` for a run of joins: their activity rows in one round trip. A member already in the log
        (back after leaving) keeps the row of their first arrival, moved to where they are now and counted again:
        a rejoin is not a new member (domain.arrivals_and_returns)."""
        rows = []
        for envelope, event in joins:
            group_id = event.group_ids[0] if event.group_ids else event.suggested_group_id
            group_ids = list(dict.fromkeys([*event.group_ids, *([group_id] if group_id else [])]))
            region_id = event.region_id
            if region_id is None and group_id:
                region_id, _ = await queries.place_of(uow.session, "group", group_id)
            rows.append(
                {
                    "event_id": str(envelope.event_id),
                    "kind": "member_joined",
                    "occurred_at": event.joined_at or envelope.occurred_at,
                    "region_id": region_id,
                    "group_id": group_id,
                    "subject_id": event.member_id,
                    "detail": {
                        "engagement_level": event.engagement_level,
                        "group_ids": group_ids,
                        "source": event.source,
                    },
                }
            )
        if not rows:
            return
        a = tables.activity
        known = set(
            (
                await uow.session.execute(
                    select(a.c.subject_id).where(
                        a.c.kind == "member_joined", a.c.subject_id.in_({r["subject_id"] for r in rows})
                    )
                )
            ).scalars()
        )
        arrivals, returns = arrivals_and_returns(rows, known)
        if arrivals:
            await uow.session.execute(_RECORD_ACTIVITY, arrivals)
        for row in returns:
            await uow.session.execute(
                update(a)
                .where(a.c.kind == "member_joined", a.c.subject_id == row["subject_id"])
                .values(region_id=row["region_id"], group_id=row["group_id"], detail=row["detail"])
            )

    async def meeting_changed(
        self, uow: UnitOfWork, envelope: Envelope, event: MeetingScheduled | MeetingUpdated
    ) -> None:
        region_id, group_id = await queries.place_of(uow.session, event.scope_type, event.scope_id)
        kind = "meeting_updated" if isinstance(event, MeetingUpdated) else "meeting_scheduled"
        await self._record(
            uow,
            envelope,
            kind,
            subject_id=event.meeting_id,
            region_id=region_id,
            group_id=group_id,
            detail={
                "title": event.title,
                "kind": event.kind,
                "scope_type": event.scope_type,
                "scope_id": event.scope_id,
                "starts_at": event.starts_at.isoformat(),
                "ends_at": event.ends_at.isoformat(),
                "timezone": event.timezone,
                "venue": event.venue,
                "capacity": event.capacity,
                "public_url": event.public_url,
                "campaign_id": event.campaign_id,
                "parent_meeting_id": event.parent_meeting_id,
            },
        )

    async def meeting_cancelled(self, uow: UnitOfWork, envelope: Envelope, event: MeetingCancelled) -> None:
        region_id, group_id = await queries.meeting_place(uow.session, event.meeting_id)
        await self._record(
            uow,
            envelope,
            "meeting_cancelled",
            subject_id=event.meeting_id,
            region_id=region_id,
            group_id=group_id,
            detail={"reason": event.reason},
        )

    async def rsvp_changed(
        self, uow: UnitOfWork, envelope: Envelope, event: RsvpReceived | RsvpCancelled | PromotedFromWaitlist
    ) -> None:
        region_id, group_id = await queries.meeting_place(uow.session, event.meeting_id)
        if isinstance(event, RsvpReceived):
            kind, detail = "rsvp_received", {"status": event.status, "guests": event.guests}
        elif isinstance(event, RsvpCancelled):
            kind, detail = "rsvp_cancelled", {}
        else:
            kind, detail = "rsvp_promoted", {}
        await self._record(
            uow,
            envelope,
            kind,
            subject_id=event.meeting_id,
            region_id=region_id,
            group_id=group_id,
            detail={"rsvp_id": event.rsvp_id, **detail},
        )

    async def campaign_launched(self, uow: UnitOfWork, envelope: Envelope, event: CampaignLaunched) -> None:
        region_id, group_id = await queries.place_of(uow.session, event.scope_type, event.scope_id)
        await self._record(
            uow,
            envelope,
            "campaign_launched",
            subject_id=event.campaign_id,
            region_id=region_id,
            group_id=group_id,
            detail={
                "title": event.title,
                "goal": event.goal,
                "scope_type": event.scope_type,
                "scope_id": event.scope_id,
            },
        )

    async def action_taken(self, uow: UnitOfWork, envelope: Envelope, event: ActionTaken) -> None:
        region_id, group_id = event.region_id, event.group_id
        if region_id is None and group_id:
            region_id, _ = await queries.place_of(uow.session, "group", group_id)
        await self._record(
            uow,
            envelope,
            "action_taken",
            subject_id=event.campaign_id,
            region_id=region_id,
            group_id=group_id,
            detail={"ask_id": event.ask_id, "kind": event.kind, "action_id": event.action_id},
            occurred_at=event.taken_at,
        )

    async def action_linked(self, uow: UnitOfWork, envelope: Envelope, event: ActionLinkedToMember) -> None:
        """An action taken with a member's address before campaigns knew them counts where the member is."""
        region_id, group_id = event.region_id, event.group_id
        if region_id is None and group_id:
            region_id, _ = await queries.place_of(uow.session, "group", group_id)
        a = tables.activity
        await uow.session.execute(
            update(a).where(a.c.subject_id == event.campaign_id, a.c.kind == "action_taken",
                            a.c.detail["action_id"].astext == event.action_id)
            .values(region_id=region_id, group_id=group_id)
        )

    async def member_left(self, uow: UnitOfWork, envelope: Envelope, event: MemberLeft) -> None:
        """A member who left is no longer a new member (until they come back: `members_joined`)."""
        await self._gone(uow, event.member_id, "left", keep_subject=True)

    async def member_erased(self, uow: UnitOfWork, envelope: Envelope, event: MemberErased) -> None:
        """An erased member's arrival stays in the log, anonymous, and no longer counts as a new member."""
        await self._gone(uow, event.member_id, "erased", keep_subject=False)

    @staticmethod
    async def _gone(uow: UnitOfWork, member_id: str, why: str, *, keep_subject: bool) -> None:
        a = tables.activity
        marked = a.c.detail.op("||")(literal({GONE: why}, JSONB))
        values: dict[str, Any] = {"detail": marked}
        if not keep_subject:
            values["subject_id"] = None
        await uow.session.execute(
            update(a).where(a.c.subject_id == member_id, a.c.kind == "member_joined").values(**values)
        )
