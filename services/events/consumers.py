"""The events service's Kafka entrypoints: a read model of members and of the network's regions and groups."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.events.service import EventsService
from shared import topics
from shared.consumer import EventConsumer
from shared.events.catalog import (
    MemberErased,
    MemberJoined,
    MemberLeft,
    MemberProfileUpdated,
    OrganisationUnitDefined,
)
from shared.events.envelope import Envelope

MEMBERS_GROUP = "events.members"


def build_consumers(service: EventsService, group: str = MEMBERS_GROUP) -> list[EventConsumer]:
    members = EventConsumer(
        group,
        (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION),
        "Who may be invited where (member ids, region, groups) and the network's units; erases on MemberErased",
    )

    @members.on(MemberJoined)
    async def member_joined(envelope: Envelope, event: MemberJoined, session: AsyncSession) -> None:
        await service.member_joined(session, event)

    @members.on(MemberProfileUpdated)
    async def member_profile_updated(envelope: Envelope, event: MemberProfileUpdated, session: AsyncSession) -> None:
        await service.member_profile_updated(session, event)

    @members.on(MemberLeft)
    async def member_left(envelope: Envelope, event: MemberLeft, session: AsyncSession) -> None:
        await service.member_left(session, event)

    @members.on(MemberErased)
    async def member_erased(envelope: Envelope, event: MemberErased, session: AsyncSession) -> None:
        await service.member_erased(session, event)

    @members.on(OrganisationUnitDefined)
    async def unit_defined(envelope: Envelope, event: OrganisationUnitDefined, session: AsyncSession) -> None:
        await service.unit_defined(session, event)

    return [members]
