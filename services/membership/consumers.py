"""Membership's event handlers: its one registry, thin adapters from other services' events to the service layer."""

from __future__ import annotations

from services.membership.reactions import Reactions
from shared import topics
from shared.events.catalog import (
    ActionKeyIssued,
    ActionTaken,
    AttendanceRecorded,
    EngagementLevelChanged,
    MpLetterRequested,
    PromotedFromWaitlist,
    RsvpCancelled,
    RsvpKeyIssued,
    RsvpReceived,
)
from shared.events.envelope import Envelope
from shared.handlers import Registry
from shared.uow import UnitOfWork

REACTIONS_GROUP = "membership.reactions"


def build_registry(reactions: Reactions, group: str = REACTIONS_GROUP) -> Registry:
    registry = Registry("membership")
    handlers = registry.group(
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

    async def key_issued(uow: UnitOfWork, envelope: Envelope, event: RsvpKeyIssued | ActionKeyIssued) -> None:
        await reactions.remember_key(uow.session, event.key_id, event.key)

    @handlers.on_tombstone
    async def key_destroyed(uow: UnitOfWork, key: str) -> None:
        await reactions.forget_key(uow.session, key)

    async def rsvp_received(uow: UnitOfWork, envelope: Envelope, event: RsvpReceived) -> None:
        await reactions.rsvp_received(uow.session, envelope, event)

    async def action_taken(uow: UnitOfWork, envelope: Envelope, event: ActionTaken) -> None:
        await reactions.action_taken(uow.session, envelope, event)

    async def level_changed(uow: UnitOfWork, envelope: Envelope, event: EngagementLevelChanged) -> None:
        await reactions.engagement_level_changed(uow.session, event)

    handlers.route(
        (RsvpKeyIssued, key_issued),
        (ActionKeyIssued, key_issued),
        (RsvpReceived, rsvp_received),
        (ActionTaken, action_taken),
        (EngagementLevelChanged, level_changed),
    )
    handlers.ignore(
        (RsvpCancelled, PromotedFromWaitlist, AttendanceRecorded, MpLetterRequested),
        "only a request to join (on an RSVP or an action) and the ladder's level change a member",
    )
    return registry
