"""Membership's event handlers: its one registry, thin adapters from other services' events to the service layer.

Events that were parked until their key arrived are released by the key's handler and dispatched through the same
group's handlers, so a parked type without a handler fails loudly instead of being dropped.
"""

from __future__ import annotations

from services.membership.front_door import FrontDoor
from services.membership.member_data import MemberData
from services.membership.member_page import MemberActivity
from services.membership.reactions import Reactions
from shared import topics
from shared.events.catalog import (
    ActionKeyIssued,
    ActionLinkedToMember,
    ActionRepeated,
    ActionTaken,
    AskPublished,
    AttendanceRecorded,
    CampaignClosed,
    CampaignLaunched,
    CampaignsDataOfMember,
    EngagementLevelChanged,
    EventsDataOfMember,
    MeetingCancelled,
    MeetingReminderDue,
    MeetingScheduled,
    MeetingUpdated,
    MpLetterAwaitingConfirmation,
    MpLetterRequested,
    NotificationFailed,
    NotificationsDataOfMember,
    NotificationSent,
    PledgePublished,
    PromotedFromWaitlist,
    RsvpCancelled,
    RsvpKeyIssued,
    RsvpLinkedToMember,
    RsvpReceived,
    RsvpRepeated,
)
from shared.events.envelope import Envelope
from shared.handlers import Registry
from shared.uow import UnitOfWork

REACTIONS_GROUP = "membership.reactions"
PUBLIC_GROUP = "membership.public"
ACTIVITY_GROUP = "membership.activity"
MEMBER_DATA_GROUP = "membership.member-data"


def build_registry(
    reactions: Reactions,
    group: str = REACTIONS_GROUP,
    public_group: str = PUBLIC_GROUP,
    activity_group: str = ACTIVITY_GROUP,
    member_data: MemberData | None = None,
    member_data_group: str = MEMBER_DATA_GROUP,
) -> Registry:
    registry = Registry("membership")
    add_public_listings(registry, public_group)
    add_member_activity(registry, activity_group)
    if member_data is not None:
        add_member_data_parts(registry, member_data, member_data_group)
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
        for released in await reactions.remember_key(uow, event.key_id, event.key):
            await handlers.dispatch(uow, released)

    @handlers.on_tombstone
    async def key_destroyed(uow: UnitOfWork, key: str) -> None:
        await reactions.forget_key(uow, key)

    async def level_changed(uow: UnitOfWork, envelope: Envelope, event: EngagementLevelChanged) -> None:
        await reactions.engagement_level_changed(uow, event)

    handlers.route(
        (RsvpKeyIssued, key_issued),
        (ActionKeyIssued, key_issued),
        (RsvpReceived, reactions.rsvp_received),
        (ActionTaken, reactions.action_taken),
        (EngagementLevelChanged, level_changed),
    )
    handlers.ignore(
        (RsvpCancelled, PromotedFromWaitlist, AttendanceRecorded, MpLetterRequested, PledgePublished,
         RsvpLinkedToMember, ActionLinkedToMember),
        "only a request to join (on an RSVP or an action) and the ladder's level change a member",
    )
    handlers.ignore(
        (RsvpRepeated, ActionRepeated, MpLetterAwaitingConfirmation),
        "a repeat changes nothing, and a letter waiting for its writer's confirmation is no join",
    )
    return registry


def add_public_listings(registry: Registry, group: str = PUBLIC_GROUP) -> None:
    """The home page's read model: the next meetings and the live campaigns, as their services announce them."""
    handlers = registry.group(
        group,
        (topics.EVENTS_MEETINGS, topics.CAMPAIGNS_CAMPAIGNS),
        "Meetings and live campaigns the network's home page lists",
    )
    handlers.route(
        (MeetingScheduled, FrontDoor.meeting_scheduled),
        (MeetingUpdated, FrontDoor.meeting_scheduled),
        (MeetingCancelled, FrontDoor.meeting_cancelled),
        (CampaignLaunched, FrontDoor.campaign_launched),
        (CampaignClosed, FrontDoor.campaign_closed),
    )
    handlers.ignore(
        (MeetingReminderDue, AskPublished),
        "the home page lists meetings and campaigns, not reminders or a campaign's asks",
    )


def add_member_activity(registry: Registry, group: str = ACTIVITY_GROUP) -> None:
    """The member page's timeline of what a member did in the other services (`member_page.MemberActivity`)."""
    handlers = registry.group(
        group,
        (topics.EVENTS_RSVPS, topics.CAMPAIGNS_ACTIONS, topics.NOTIFICATIONS_DELIVERIES),
        "What a member did elsewhere (RSVPs, attendance, actions, emails sent), for the member page's timeline",
        # A mailing's NotificationSent trickle in at the sending rate: gathered into batches of hundreds, one
        # transaction and offset commit each, not one a record; the timeline is half a second later.
        gather_s=0.5,
    )
    handlers.route(
        (RsvpReceived, MemberActivity.rsvp_received),
        (RsvpLinkedToMember, MemberActivity.rsvp_linked),
        (RsvpCancelled, MemberActivity.rsvp_cancelled),
        (AttendanceRecorded, MemberActivity.attendance_recorded),
        (ActionTaken, MemberActivity.action_taken),
        (ActionLinkedToMember, MemberActivity.action_taken),
        (NotificationSent, MemberActivity.notification_sent),
        (NotificationFailed, MemberActivity.notification_failed),
    )
    # A mailing's emails arrive as a run of NotificationSent, one member each: kept in one statement a run.
    handlers.on_run(NotificationSent)(MemberActivity.notifications_sent)
    handlers.ignore(
        (RsvpRepeated, PromotedFromWaitlist, MpLetterRequested, MpLetterAwaitingConfirmation, PledgePublished,
         ActionRepeated),
        "the timeline shows the RSVP and the action themselves; a repeat, a promotion or a letter's delivery adds "
        "nothing an organiser follows up",
    )


def add_member_data_parts(registry: Registry, member_data: MemberData, group: str = MEMBER_DATA_GROUP) -> None:
    """Each service's part of a member's data download, collected until the download is whole."""
    handlers = registry.group(
        group,
        (topics.EVENTS_MEMBER_DATA, topics.CAMPAIGNS_MEMBER_DATA, topics.NOTIFICATIONS_MEMBER_DATA),
        "Each service's part of a member's data download (sealed with their key); the last one sends the link",
    )

    async def part(
        uow: UnitOfWork,
        envelope: Envelope,
        event: EventsDataOfMember | CampaignsDataOfMember | NotificationsDataOfMember,
    ) -> None:
        await member_data.part_arrived(uow, event.request_id, event.source_service, event.part, event.note)

    handlers.route((EventsDataOfMember, part), (CampaignsDataOfMember, part), (NotificationsDataOfMember, part))
