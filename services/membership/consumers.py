"""Membership's Kafka entrypoints: thin adapters from other services' events to the service layer."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.membership.reactions import Reactions
from shared import topics
from shared.consumer import EventConsumer
from shared.events.catalog import ActionKeyIssued, ActionTaken, EngagementLevelChanged, RsvpKeyIssued, RsvpReceived
from shared.events.envelope import Envelope

REACTIONS_GROUP = "membership.reactions"


def build_consumers(reactions: Reactions, group: str = REACTIONS_GROUP) -> list[EventConsumer]:
    consumer = EventConsumer(
        group,
        (
            topics.EVENTS_RSVPS,
            topics.EVENTS_SUBJECT_KEYS,
            topics.CAMPAIGNS_ACTIONS,
            topics.CAMPAIGNS_SUBJECT_KEYS,
            topics.CAMPAIGNS_ENGAGEMENT,
        ),
        "People who RSVPed or took an action and asked to join become members; the engagement ladder's level",
    )

    @consumer.on(RsvpKeyIssued)
    async def rsvp_key(envelope: Envelope, event: RsvpKeyIssued, session: AsyncSession) -> None:
        await reactions.remember_key(session, event.key_id, event.key)

    @consumer.on(ActionKeyIssued)
    async def action_key(envelope: Envelope, event: ActionKeyIssued, session: AsyncSession) -> None:
        await reactions.remember_key(session, event.key_id, event.key)

    @consumer.on_tombstone
    async def key_destroyed(key: str, session: AsyncSession) -> None:
        await reactions.forget_key(session, key)

    @consumer.on(RsvpReceived)
    async def rsvp_received(envelope: Envelope, event: RsvpReceived, session: AsyncSession) -> None:
        await reactions.rsvp_received(session, envelope, event)

    @consumer.on(ActionTaken)
    async def action_taken(envelope: Envelope, event: ActionTaken, session: AsyncSession) -> None:
        await reactions.action_taken(session, envelope, event)

    @consumer.on(EngagementLevelChanged)
    async def level_changed(envelope: Envelope, event: EngagementLevelChanged, session: AsyncSession) -> None:
        await reactions.engagement_level_changed(session, event)

    return [consumer]
