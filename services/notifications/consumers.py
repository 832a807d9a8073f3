"""Notifications' event handlers: its one registry, thin adapters from events to the service layer."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.digests import Digests
from services.notifications.followups import FollowUps
from services.notifications.invitations import Invitations
from services.notifications.letters import LetterNotifications
from services.notifications.meetings import MeetingNotifications
from services.notifications.service import NotificationService
from shared import topics
from shared.events.catalog import (
    ActionKeyIssued,
    ActionTaken,
    AskPublished,
    AttendanceRecorded,
    CampaignClosed,
    CampaignLaunched,
    ConsentChanged,
    EngagementLevelChosen,
    MeetingCancelled,
    MeetingReminderDue,
    MeetingScheduled,
    MeetingUpdated,
    MemberConfirmed,
    MemberErased,
    MemberJoined,
    MemberLeft,
    MemberProfileUpdated,
    MpLetterRequested,
    OrganisationUnitDefined,
    OrganiserInvited,
    PromotedFromWaitlist,
    RoleGranted,
    RsvpCancelled,
    RsvpKeyIssued,
    RsvpReceived,
    SubjectKeyIssued,
)
from shared.events.envelope import Envelope
from shared.handlers import Handlers, Registry
from shared.uow import UnitOfWork


def _route(consumer: Handlers, model: type[Any], handler: Any) -> None:
    """Register `handler(session, envelope, event)` for `model` on `consumer`."""

    async def adapter(uow: UnitOfWork, envelope: Envelope, event: Any) -> None:
        await handler(uow.session, envelope, event)

    consumer.on(model)(adapter)


def build_registry(
    service: NotificationService,
    meetings: MeetingNotifications,
    letters: LetterNotifications,
    digests: Digests,
    follow_ups: FollowUps,
    invitations: Invitations,
    *,
    group_suffix: str = "",
) -> Registry:
    """Every consumer group of the service. Tests pass a `group_suffix` so their groups start apart from a running
    service's."""
    registry = Registry("notifications")
    keys = registry.group(
        "notifications.keys" + group_suffix,
        (topics.MEMBERSHIP_SUBJECT_KEYS, topics.EVENTS_SUBJECT_KEYS, topics.CAMPAIGNS_SUBJECT_KEYS),
        "Copies members', RSVPs' and actions' data keys so their sealed fields can be read; a tombstone destroys "
        "the copy",
    )

    async def key_issued(session: AsyncSession, envelope: Envelope, event: Any) -> None:
        await service.remember_key(session, event.key_id, event.key)

    async def keys_issued(uow: UnitOfWork, run: list[tuple[Envelope, Any]]) -> None:
        await service.remember_keys(uow.session, [(event.key_id, event.key) for _, event in run])

    key_models: tuple[type[Any], ...] = (SubjectKeyIssued, RsvpKeyIssued, ActionKeyIssued)
    for key_model in key_models:
        _route(keys, key_model, key_issued)
        keys.on_run(key_model)(keys_issued)

    @keys.on_tombstone
    async def key_destroyed(uow: UnitOfWork, key: str) -> None:
        await service.forget_key(uow.session, key)

    members = registry.group(
        "notifications" + group_suffix,
        (topics.MEMBERSHIP_MEMBERS, topics.EVENTS_MEETINGS, topics.EVENTS_RSVPS, topics.CAMPAIGNS_ACTIONS),
        "Welcome emails, the recipient mirror and suppressions; meeting announcements, RSVP emails, reminders; "
        "letters to MPs",
    )
    for model, handler in (
        (MemberJoined, service.member_joined),
        (MemberConfirmed, service.member_confirmed),
        (MemberProfileUpdated, service.profile_updated),
        (ConsentChanged, service.consent_changed),
        (MemberLeft, service.member_left),
        (MemberErased, service.member_erased),
        (MeetingScheduled, meetings.meeting_scheduled),
        (MeetingUpdated, meetings.meeting_updated),
        (MeetingCancelled, meetings.meeting_cancelled),
        (MeetingReminderDue, meetings.reminder_due),
        (RsvpReceived, meetings.rsvp_received),
        (PromotedFromWaitlist, meetings.promoted),
        (RsvpCancelled, meetings.rsvp_cancelled),
        (AttendanceRecorded, meetings.attendance),
        (MpLetterRequested, letters.letter_requested),
    ):
        _route(members, model, handler)

    members.ignore(
        (ActionTaken, EngagementLevelChosen),
        "an action's confirmation is not sent yet (issue #17); the chosen level changes no email",
    )

    @members.on_run(MemberJoined)
    async def members_joined(uow: UnitOfWork, run: list[tuple[Envelope, MemberJoined]]) -> None:
        await service.members_joined(uow.session, run)

    # Organisers' digests and follow-ups: who organises where, and the activity log digests are made of.
    organisers = registry.group(
        "notifications.organisers" + group_suffix,
        (topics.MEMBERSHIP_ORGANISATION,),
        "Organisers and their scopes (RoleGranted) for digests; the network's regions and groups by name; "
        "organisers' invitations",
    )
    _route(organisers, RoleGranted, digests.role_granted)
    _route(organisers, OrganisationUnitDefined, digests.unit_defined)
    _route(organisers, OrganiserInvited, invitations.organiser_invited)

    activity = registry.group(
        "notifications.activity" + group_suffix,
        (
            topics.MEMBERSHIP_MEMBERS,
            topics.EVENTS_MEETINGS,
            topics.EVENTS_RSVPS,
            topics.CAMPAIGNS_CAMPAIGNS,
            topics.CAMPAIGNS_ACTIONS,
        ),
        "What happens where (joins, meetings, RSVPs, campaigns, actions) for organisers' digests; follow-ups",
    )

    async def member_joined(session: AsyncSession, envelope: Envelope, event: MemberJoined) -> None:
        await digests.member_joined(session, envelope, event)
        await follow_ups.schedule(session, event)

    async def action_taken(session: AsyncSession, envelope: Envelope, event: ActionTaken) -> None:
        await digests.action_taken(session, envelope, event)
        await follow_ups.action_taken(session, envelope, event)

    async def member_erased(session: AsyncSession, envelope: Envelope, event: MemberErased) -> None:
        await digests.member_erased(session, envelope, event)
        await follow_ups.member_erased(session, envelope, event)

    for model, handler in (
        (MemberJoined, member_joined),
        (MemberProfileUpdated, digests.member_profile_updated),
        (MemberErased, member_erased),
        (MeetingScheduled, digests.meeting_changed),
        (MeetingUpdated, digests.meeting_changed),
        (MeetingCancelled, digests.meeting_cancelled),
        (RsvpReceived, digests.rsvp_changed),
        (RsvpCancelled, digests.rsvp_changed),
        (PromotedFromWaitlist, digests.rsvp_changed),
        (CampaignLaunched, digests.campaign_launched),
        (ActionTaken, action_taken),
    ):
        _route(activity, model, handler)

    activity.ignore(
        (MemberConfirmed, ConsentChanged, EngagementLevelChosen, MemberLeft, MeetingReminderDue, AttendanceRecorded,
         AskPublished, CampaignClosed, MpLetterRequested),
        "digests and follow-ups report arrivals, meetings, RSVPs, campaigns launched and actions; not these (yet)",
    )

    @activity.on_run(MemberJoined)
    async def activity_joined(uow: UnitOfWork, run: list[tuple[Envelope, MemberJoined]]) -> None:
        await digests.members_joined(uow.session, run)
        await follow_ups.schedule_many(uow.session, [event for _, event in run])

    return registry
