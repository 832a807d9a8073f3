"""The campaigns service's use cases for campaigns and their asks: launch, add an ask, close; the meetings an
attend ask points at (from the events service); and what the pages read of them. Each use case is one unit of
work that writes state and its events together.

A closed campaign is checked under a share lock (actions.py), so closing waits for actions in flight.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns import queries
from services.campaigns.domain import (
    AskNotFound,
    AskPlan,
    CampaignNotFound,
    NotYours,
    attend_ask_for,
    check_new_ask,
    check_publish,
    validate_ask,
    validate_campaign,
)
from shared.auth import OrganiserScope
from shared.errors import InvalidInput
from shared.events import catalog as ev
from shared.events.envelope import EventData
from shared.uow import UnitOfWork, UnitsOfWork


def utcnow() -> datetime:
    return datetime.now(UTC)


async def check_scope(session: AsyncSession, organiser: OrganiserScope | None, scope_type: str,
                      scope_id: str | None) -> str | None:
    """The scope's region; NotYours when the organiser's scope does not cover it (None: no organiser to check)."""
    region_id = await queries.region_of(session, scope_type, scope_id)
    ancestors = await queries.ancestors(session, scope_id)
    if organiser is not None and not organiser.covers(scope_type, scope_id, region_id, ancestors=ancestors):
        raise NotYours(f"You organise {organiser.describe()}; this campaign belongs to the {scope_type} "
                       f"{scope_id or ''}".rstrip())
    return region_id


class CampaignsService:
    def __init__(self, uows: UnitsOfWork) -> None:
        self.uows = uows

    async def covers_campaign(self, organiser: OrganiserScope, campaign: Any) -> bool:
        async with self.uows.begin() as uow:
            ancestors = await queries.ancestors(uow.session, campaign.scope_id)
        return organiser.covers(campaign.scope_type, campaign.scope_id, campaign.region_id, ancestors=ancestors)

    async def member_places(self, group_ids: Sequence[str]) -> list[str]:
        """The groups and every unit above them, for whether an organiser's scope covers a member."""
        async with self.uows.begin() as uow:
            return [a for g in group_ids for a in [g, *await queries.ancestors(uow.session, g)]]

    # use cases -----------------------------------------------------------------------------------------
    async def launch(self, raw: dict[str, Any], organiser: OrganiserScope | None,
                     asks: Sequence[dict[str, Any]] = (), *, draft: bool = False) -> str:
        """Store a campaign (and any asks given with it) and announce it: CampaignLaunched, then AskPublished.

        `draft`: store it unannounced and off the public pages until `publish` (the organisers' pages do)."""
        plan = validate_campaign(raw)
        ask_plans = []
        for i, a in enumerate(asks):
            try:
                ask_plans.append(validate_ask(a))
            except InvalidInput as exc:
                raise InvalidInput({f"asks[{i}].{k}": v for k, v in exc.errors.items()}) from None
        campaign_id = str(uuid.uuid4())
        c = tables.campaigns
        async with self.uows.begin() as uow:
            region_id = await check_scope(uow.session, organiser, plan.scope_type, plan.scope_id)
            await uow.session.execute(
                pg_insert(c).values(
                    id=campaign_id, title=plan.title, summary=plan.summary, goal=plan.goal, issues=plan.issues,
                    scope_type=plan.scope_type, scope_id=plan.scope_id, region_id=region_id,
                    partner_ids=plan.partner_ids, status="draft" if draft else "live",
                    created_by=organiser.organiser_id if organiser else None, launched_at=utcnow(),
                )
            )
            events: list[EventData] = [] if draft else [
                ev.CampaignLaunched(campaign_id=campaign_id, title=plan.title, scope_type=plan.scope_type,  # type: ignore[arg-type]
                                    scope_id=plan.scope_id, goal=plan.goal, issues=plan.issues,
                                    partner_ids=plan.partner_ids)
            ]
            for ask in ask_plans:
                events.append(await self._add_ask(uow.session, campaign_id, "live", ask))
            if not draft:
                await uow.emit_all(events)
        return campaign_id

    async def publish(self, campaign_id: str, organiser: OrganiserScope | None) -> bool:
        """A draft goes live (idempotent: False when it already has): CampaignLaunched, then an AskPublished for
        each ask added while it was a draft, in their order."""
        c, a = tables.campaigns, tables.asks
        async with self.uows.begin() as uow:
            campaign = await queries.locked_campaign(uow.session, campaign_id)
            await check_scope(uow.session, organiser, campaign.scope_type, campaign.scope_id)
            asks = list((await uow.session.execute(
                select(a).where(a.c.campaign_id == campaign_id).order_by(a.c.position))).all())
            if not check_publish(campaign_status=campaign.status, asks=len(asks)):
                return False
            await uow.session.execute(
                update(c).where(c.c.id == campaign_id).values(status="live", launched_at=utcnow()))
            await uow.emit_all([
                ev.CampaignLaunched(campaign_id=campaign_id, title=campaign.title,  # type: ignore[arg-type]
                                    scope_type=campaign.scope_type, scope_id=campaign.scope_id, goal=campaign.goal,
                                    issues=list(campaign.issues), partner_ids=list(campaign.partner_ids)),
                *[ev.AskPublished(campaign_id=campaign_id, ask_id=r.id, kind=r.kind, title=r.title,  # type: ignore[arg-type]
                                  target=r.goal, meeting_id=r.meeting_id) for r in asks],
            ])
        return True

    async def _add_ask(self, session: AsyncSession, campaign_id: str, campaign_status: str,
                       plan: AskPlan) -> ev.AskPublished:
        """Store an ask the campaign takes (`check_new_ask`) after its others; the event that announces it."""
        meeting_known = plan.kind != "attend" or await queries.meeting_known(session, plan.meeting_id)
        check_new_ask(plan, campaign_status=campaign_status, meeting_known=meeting_known)
        a = tables.asks
        position = (await session.execute(
            select(func.coalesce(func.max(a.c.position), -1) + 1).where(a.c.campaign_id == campaign_id)
        )).scalar_one()
        ask_id = str(uuid.uuid4())
        await session.execute(
            pg_insert(a).values(
                id=ask_id, campaign_id=campaign_id, kind=plan.kind, title=plan.title, description=plan.description,
                body=plan.body, addressee=plan.addressee, goal=plan.goal, letter_subject=plan.letter_subject,
                meeting_id=plan.meeting_id, share_url=plan.share_url, position=position, created_at=utcnow(),
            )
        )
        return ev.AskPublished(campaign_id=campaign_id, ask_id=ask_id, kind=plan.kind, title=plan.title,  # type: ignore[arg-type]
                               target=plan.goal, meeting_id=plan.meeting_id)

    async def add_ask(self, campaign_id: str, raw: dict[str, Any], organiser: OrganiserScope | None) -> str:
        plan = validate_ask(raw)
        async with self.uows.begin() as uow:
            campaign = await queries.locked_campaign(uow.session, campaign_id)
            await check_scope(uow.session, organiser, campaign.scope_type, campaign.scope_id)
            event = await self._add_ask(uow.session, campaign_id, campaign.status, plan)
            if campaign.status != "draft":  # a draft's asks are announced when it is published
                await uow.emit(event)
        return event.ask_id

    async def close(self, campaign_id: str, organiser: OrganiserScope | None) -> bool:
        """Close a campaign (idempotent): its asks take no more actions; CampaignClosed."""
        c = tables.campaigns
        async with self.uows.begin() as uow:
            campaign = await queries.locked_campaign(uow.session, campaign_id)
            await check_scope(uow.session, organiser, campaign.scope_type, campaign.scope_id)
            if campaign.status == "closed":
                return False
            now = utcnow()
            await uow.session.execute(update(c).where(c.c.id == campaign_id).values(status="closed", closed_at=now))
            await uow.emit(ev.CampaignClosed(campaign_id=campaign_id, closed_at=now))
        return True

    # reactions to the events service's meetings --------------------------------------------------------
    async def meeting_scheduled(self, uow: UnitOfWork, event: ev.MeetingScheduled | ev.MeetingUpdated) -> None:
        """Keep what an attend ask shows; a meeting scheduled for a live campaign becomes one of its asks."""
        session = uow.session
        m = tables.meetings
        values = {"title": event.title, "kind": event.kind, "starts_at": event.starts_at, "ends_at": event.ends_at,
                  "timezone": event.timezone, "venue": event.venue, "public_url": event.public_url,
                  "campaign_id": event.campaign_id, "status": "scheduled"}
        await session.execute(
            pg_insert(m).values(meeting_id=event.meeting_id, **values)
            .on_conflict_do_update(index_elements=[m.c.meeting_id], set_=values)
        )
        if not event.campaign_id:
            return
        c, a = tables.campaigns, tables.asks
        campaign = (await session.execute(
            select(c).where(c.c.id == event.campaign_id).with_for_update()
        )).first()
        status = campaign.status if campaign is not None else None
        linked = status == "live" and (await session.execute(
            select(a.c.id).where(a.c.campaign_id == event.campaign_id, a.c.kind == "attend",
                                 a.c.meeting_id == event.meeting_id)
        )).first() is not None
        plan = attend_ask_for(meeting_id=event.meeting_id, title=event.title, campaign_status=status, linked=linked)
        if plan is not None:
            await uow.emit(await self._add_ask(session, event.campaign_id, "live", plan))

    async def meeting_cancelled(self, uow: UnitOfWork, event: ev.MeetingCancelled) -> None:
        m = tables.meetings
        await uow.session.execute(update(m).where(m.c.meeting_id == event.meeting_id).values(status="cancelled"))

    # queries -------------------------------------------------------------------------------------------
    async def get_campaign(self, campaign_id: str) -> Row:
        c = tables.campaigns
        async with self.uows.begin() as uow:
            return await queries.one(uow.session, select(c).where(c.c.id == campaign_id), CampaignNotFound(campaign_id))

    async def public_campaign(self, campaign_id: str) -> Row:
        """The campaign as the public pages show it: a draft is not found (only its organisers' preview shows it)."""
        campaign = await self.get_campaign(campaign_id)
        if campaign.status == "draft":
            raise CampaignNotFound(campaign_id)
        return campaign

    async def list_campaigns(self, *, include_closed: bool = True, limit: int = 200, offset: int = 0,
                             within: OrganiserScope | None = None) -> list[Row]:
        """Campaigns, live first; `within`: only those an organiser's (or an API key's) scope covers."""
        c = tables.campaigns
        q = select(c).where(queries.in_scope(within))
        if not include_closed:
            q = q.where(c.c.status == "live")
        q = q.order_by(c.c.status.desc(), c.c.launched_at.desc(), c.c.id).limit(limit).offset(offset)
        async with self.uows.begin() as uow:
            return list((await uow.session.execute(q)).all())

    async def organiser_page(self, within: OrganiserScope, *, limit: int, offset: int
                             ) -> tuple[list[Row], dict[str, int], dict[str, str]]:
        """A page of the campaigns `within` looks after (as `list_campaigns` orders them), the actions counted for
        each (as `ActionsService.totals` counts them) and the names of the units they are for, in one transaction."""
        c = tables.campaigns
        q = (select(c).where(queries.in_scope(within)).order_by(c.c.status.desc(), c.c.launched_at.desc(), c.c.id)
             .limit(limit).offset(offset))
        async with self.uows.begin() as uow:
            rows = list((await uow.session.execute(q)).all())
            totals = await queries.counted_actions(uow.session, [r.id for r in rows])
            names = await queries.unit_names_of(uow.session, sorted({r.scope_id for r in rows if r.scope_id}))
        return rows, totals, names

    async def campaigns_for(self, organiser: OrganiserScope) -> list[Row]:
        return await self.list_campaigns(limit=1000, within=organiser)

    async def asks_of(self, campaign_id: str) -> list[Row]:
        a = tables.asks
        async with self.uows.begin() as uow:
            return list((await uow.session.execute(
                select(a).where(a.c.campaign_id == campaign_id).order_by(a.c.position))).all())

    async def get_ask(self, ask_id: str, campaign_id: str | None = None) -> Row:
        a = tables.asks
        q = select(a).where(a.c.id == ask_id)
        if campaign_id is not None:
            q = q.where(a.c.campaign_id == campaign_id)
        async with self.uows.begin() as uow:
            return await queries.one(uow.session, q, AskNotFound(ask_id))

    async def petitions(self, *, limit: int, offset: int,
                        within: OrganiserScope | None = None) -> tuple[list[Row], int]:
        """Petitions of the campaigns `within` covers (an API key's scope), oldest first, and how many there are."""
        a, c = tables.asks, tables.campaigns
        mine = and_(a.c.kind == "petition", c.c.status != "draft", queries.in_scope(within))
        base = select(a, c.c.status.label("campaign_status"), c.c.title.label("campaign_title")).join(
            c, c.c.id == a.c.campaign_id).where(mine)
        async with self.uows.begin() as uow:
            rows = (await uow.session.execute(
                base.order_by(a.c.created_at, a.c.id).limit(limit).offset(offset))).all()
            total = (await uow.session.execute(
                select(func.count()).select_from(a.join(c, c.c.id == a.c.campaign_id)).where(mine))).scalar_one()
        return list(rows), int(total)

    async def petition(self, ask_id: str, within: OrganiserScope | None = None) -> Row:
        """The petition; AskNotFound also when its campaign lies outside `within` (an API key's scope)."""
        a, c = tables.asks, tables.campaigns
        async with self.uows.begin() as uow:
            return await queries.one(uow.session, select(
                a, c.c.status.label("campaign_status"), c.c.title.label("campaign_title"), c.c.scope_type,
                c.c.scope_id, c.c.region_id,
            ).join(c, c.c.id == a.c.campaign_id).where(a.c.id == ask_id, a.c.kind == "petition", c.c.status != "draft",
                                                       queries.in_scope(within)), AskNotFound(ask_id))

    async def signatures_of_member(self, member_id: str, organiser: OrganiserScope) -> list[Row]:
        """A member's petition signatures in campaigns the organiser's (or API key's) scope covers, oldest first."""
        x, c = tables.actions, tables.campaigns
        q = (select(x, c.c.scope_type, c.c.scope_id, c.c.region_id.label("campaign_region_id"))
             .join(c, c.c.id == x.c.campaign_id)
             .where(x.c.member_id == member_id, x.c.kind == "petition").order_by(x.c.created_at, x.c.id))
        async with self.uows.begin() as uow:
            rows = list((await uow.session.execute(q)).all())
            return [r for r in rows if organiser.covers(r.scope_type, r.scope_id, r.campaign_region_id,
                                                        ancestors=await queries.ancestors(uow.session, r.scope_id))]

    async def meeting(self, meeting_id: str | None) -> Row | None:
        if not meeting_id:
            return None
        m = tables.meetings
        async with self.uows.begin() as uow:
            return (await uow.session.execute(select(m).where(m.c.meeting_id == meeting_id))).first()

    async def upcoming_meetings(self) -> list[Row]:
        m = tables.meetings
        async with self.uows.begin() as uow:
            return list((await uow.session.execute(
                select(m).where(m.c.status == "scheduled", m.c.ends_at >= utcnow()).order_by(m.c.starts_at)
            )).all())

    async def units(self) -> list[Row]:
        async with self.uows.begin() as uow:
            return await queries.units(uow.session)
