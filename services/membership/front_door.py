"""The network's home page: what organisers say about the network, the next public meetings and the live campaigns.

Meetings and campaigns belong to the events and campaigns services; membership learns them only from their events
(`MeetingScheduled`/`Updated`/`Cancelled`, `CampaignLaunched`/`Closed`) and keeps the little the home page shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.membership import db as tables
from shared.errors import InvalidInput
from shared.events.catalog import (
    CampaignClosed,
    CampaignLaunched,
    MeetingCancelled,
    MeetingScheduled,
    MeetingUpdated,
)
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork, UnitsOfWork

MAX_DESCRIPTION = 2000


@dataclass(frozen=True)
class HomePage:
    """What the home page shows."""

    description: str
    meetings: list[Any]  # rows of public_meetings: meeting_id, title, kind, venue, starts_at, timezone
    campaigns: list[Any]  # rows of public_campaigns: campaign_id, title, goal


class FrontDoor:
    def __init__(self, uows: UnitsOfWork) -> None:
        self.uows = uows

    async def home(self, *, meetings: int = 5, campaigns: int = 6) -> HomePage:
        """The network's description, the next `meetings` meetings not cancelled, the newest live campaigns."""
        pm, pc, np = tables.public_meetings, tables.public_campaigns, tables.network_profile
        async with self.uows.begin() as uow:
            session = uow.session
            description = (await session.execute(select(np.c.description).where(np.c.id == 1))).scalar()
            upcoming = await session.execute(
                select(pm)
                .where(~pm.c.cancelled, pm.c.starts_at >= datetime.now(UTC))
                .order_by(pm.c.starts_at, pm.c.title)
                .limit(meetings)
            )
            live = await session.execute(
                select(pc).where(pc.c.closed_at.is_(None)).order_by(pc.c.launched_at.desc()).limit(campaigns)
            )
            return HomePage(description or "", list(upcoming.all()), list(live.all()))

    async def describe(self, description: str, *, actor: str) -> None:
        """Organisers say who the network is, in their words."""
        description = description.strip()
        if not description or len(description) > MAX_DESCRIPTION:
            raise InvalidInput({"description": f"Write between 1 and {MAX_DESCRIPTION} characters"})
        np = tables.network_profile
        async with self.uows.begin() as uow:
            await uow.session.execute(
                pg_insert(np)
                .values(id=1, description=description, updated_by=actor)
                .on_conflict_do_update(
                    index_elements=["id"],
                    set_={"description": description, "updated_by": actor, "updated_at": datetime.now(UTC)},
                )
            )
            await uow.session.execute(insert(tables.audit_log).values(actor=actor, action="network.described"))

    # the read model, fed by events' and campaigns' events ----------------------------------------
    @staticmethod
    async def meeting_scheduled(uow: UnitOfWork, envelope: Envelope, event: MeetingScheduled | MeetingUpdated) -> None:
        """A new or changed meeting; a change older than the one kept (by `sequence`) changes nothing."""
        pm = tables.public_meetings
        values = {
            "title": event.title,
            "kind": event.kind,
            "venue": event.venue,
            "starts_at": event.starts_at,
            "timezone": event.timezone,
            "sequence": event.sequence,
            "scope_type": event.scope_type,
            "scope_id": event.scope_id,
        }
        await uow.session.execute(
            pg_insert(pm)
            .values(meeting_id=event.meeting_id, **values)
            .on_conflict_do_update(index_elements=["meeting_id"], set_=values, where=pm.c.sequence <= event.sequence)
        )

    @staticmethod
    async def meeting_cancelled(uow: UnitOfWork, envelope: Envelope, event: MeetingCancelled) -> None:
        pm = tables.public_meetings
        await uow.session.execute(update(pm).where(pm.c.meeting_id == event.meeting_id).values(cancelled=True))

    @staticmethod
    async def campaign_launched(uow: UnitOfWork, envelope: Envelope, event: CampaignLaunched) -> None:
        pc = tables.public_campaigns
        values = {"title": event.title, "goal": event.goal}
        await uow.session.execute(
            pg_insert(pc)
            .values(campaign_id=event.campaign_id, launched_at=envelope.occurred_at, **values)
            .on_conflict_do_update(index_elements=["campaign_id"], set_=values)
        )

    @staticmethod
    async def campaign_closed(uow: UnitOfWork, envelope: Envelope, event: CampaignClosed) -> None:
        pc = tables.public_campaigns
        await uow.session.execute(
            update(pc).where(pc.c.campaign_id == event.campaign_id).values(closed_at=event.closed_at)
        )
