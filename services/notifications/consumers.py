"""Notifications' event handlers: its one registry, by consumer group. The handlers are the use cases' own
methods, `(uow, envelope, event)`; events released from parking (when the key they waited for arrives) are
dispatched through the group that parked them, so a released event of a type with no handler raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.notifications import db as tables
from services.notifications.action_notices import ActionNotices
from services.notifications.activity import ActivityLog
from services.notifications.confirmations import ActionConfirmations
from services.notifications.followups import FollowUps
from services.notifications.invitations import Invitations
from services.notifications.letters import LetterNotifications
from services.notifications.meetings import MeetingNotifications
from services.notifications.member_data import answer_member_data
from services.notifications.member_requests import MemberRequestEmails
from services.notifications.organisers import Organisers
from services.notifications.service import NotificationService
from shared import topics
from shared.events.catalog import (
    ActionKeyIssued,
    ActionLinkedToMember,
    ActionRepeated,
    ActionTaken,
    ApiKeyRevoked,
    AskPublished,
    AttendanceRecorded,
    CampaignClosed,
    CampaignLaunched,
    ConsentChanged,
    EngagementLevelChosen,
    JoinChangeRequested,
    MeetingCancelled,
    MeetingReminderDue,
    MeetingScheduled,
    MeetingUpdated,
    MemberConfirmed,
    MemberDataReady,
    MemberDataRequested,
    MemberErased,
    MemberJoined,
    MemberLeft,
    MemberProfileUpdated,
    MemberRightsConfirmationRequested,
    MpLetterAwaitingConfirmation,
    MpLetterRequested,
    OrganisationUnitDefined,
    OrganiserDisabled,
    OrganiserInvited,
    OrganiserSignedOut,
    OrganiserSignInLocked,
    PledgePublished,
    PromotedFromWaitlist,
    RoleGranted,
    RoleRevoked,
    RsvpCancelled,
    RsvpKeyIssued,
    RsvpLinkedToMember,
    RsvpReceived,
    RsvpRepeated,
    SubjectKeyIssued,
)
from shared.events.envelope import Envelope
from shared.handlers import Handlers, Registry
from shared.revocations import add_revocation_group
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class UseCases:
    """What notifications' handlers call (made by main.py)."""

    service: NotificationService
    meetings: MeetingNotifications
    letters: LetterNotifications
    organisers: Organisers
    activity: ActivityLog
    follow_ups: FollowUps
    invitations: Invitations
    member_requests: MemberRequestEmails
    action_notices: ActionNotices
    confirmations: ActionConfirmations


def build_registry(use_cases: UseCases, *, group_suffix: str = "") -> Registry:
    """Every consumer group of the service. Tests pass a `group_suffix` so their groups start apart from a running
    service's."""
    u = use_cases
    service = u.service
    registry = Registry("notifications")
    keys = registry.group(
        "notifications.keys" + group_suffix,
        (topics.MEMBERSHIP_SUBJECT_KEYS, topics.EVENTS_SUBJECT_KEYS, topics.CAMPAIGNS_SUBJECT_KEYS),
        "Copies members', RSVPs' and actions' data keys so their sealed fields can be read; a tombstone destroys "
        "the copy",
    )
    members = registry.group(
        "notifications" + group_suffix,
        (topics.MEMBERSHIP_MEMBERS, topics.EVENTS_MEETINGS, topics.EVENTS_RSVPS, topics.CAMPAIGNS_ACTIONS),
        "Welcome emails, the recipient mirror and suppressions; links members confirm; meeting announcements, "
        "RSVP emails, reminders; letters to MPs",
    )
    organisers = registry.group(
        "notifications.organisers" + group_suffix,
        (topics.MEMBERSHIP_ORGANISATION,),
        "Organisers and their scopes (RoleGranted) for digests; the network's regions and groups by name; "
        "organisers' invitations",
    )
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
    # The groups whose handlers park events until a key arrives; they read different topics, so an event's
    # type names the group that parked it.
    parking_groups = (members, organisers)

    async def key_issued(uow: UnitOfWork, envelope: Envelope, event: Any) -> None:
        await keys_issued(uow, [(envelope, event)])

    async def keys_issued(uow: UnitOfWork, run: list[tuple[Envelope, Any]]) -> None:
        released = await service.remember_keys(uow, [(event.key_id, event.key) for _, event in run])
        await dispatch_released(uow, released, parking_groups)

    key_models: tuple[type[Any], ...] = (SubjectKeyIssued, RsvpKeyIssued, ActionKeyIssued)
    for key_model in key_models:
        keys.on(key_model)(key_issued)
        keys.on_run(key_model)(keys_issued)

    @keys.on_tombstone
    async def key_destroyed(uow: UnitOfWork, key: str) -> None:
        await service.forget_key(uow, key)

    async def member_data_requested(uow: UnitOfWork, envelope: Envelope, event: MemberDataRequested) -> None:
        await answer_member_data(service, uow, envelope, event)

    members.route(
        (MemberJoined, service.member_joined),
        (MemberConfirmed, service.member_confirmed),
        (MemberProfileUpdated, service.profile_updated),
        (ConsentChanged, service.consent_changed),
        (MemberLeft, service.member_left),
        (MemberErased, service.member_erased),
        (JoinChangeRequested, u.member_requests.join_change_requested),
        (MemberRightsConfirmationRequested, u.member_requests.rights_confirmation_requested),
        (MemberDataRequested, member_data_requested),
        (MemberDataReady, u.member_requests.data_ready),
        (MeetingScheduled, u.meetings.meeting_scheduled),
        (MeetingUpdated, u.meetings.meeting_updated),
        (MeetingCancelled, u.meetings.meeting_cancelled),
        (MeetingReminderDue, u.meetings.reminder_due),
        (RsvpReceived, u.meetings.rsvp_received),
        (PromotedFromWaitlist, u.meetings.promoted),
        (RsvpCancelled, u.meetings.rsvp_cancelled),
        (AttendanceRecorded, u.meetings.attendance),
        (MpLetterRequested, u.letters.letter_requested),
        (RsvpRepeated, u.meetings.rsvp_repeated),
        (ActionRepeated, u.action_notices.action_repeated),
        (MpLetterAwaitingConfirmation, u.action_notices.letter_awaiting_confirmation),
        (ActionTaken, u.confirmations.action_taken),
        (PledgePublished, u.confirmations.pledge_published),
    )
    members.on_run(MemberJoined)(service.members_joined)
    members.ignore(
        (EngagementLevelChosen, ActionLinkedToMember, RsvpLinkedToMember),
        "the chosen level changes no email; a link to a member changes no email (notifications.activity counts it)",
    )

    organisers.route(
        (RoleGranted, u.organisers.role_granted),
        (RoleRevoked, u.organisers.role_revoked),
        (OrganiserDisabled, u.organisers.organiser_disabled),
        (OrganisationUnitDefined, u.organisers.unit_defined),
        (OrganiserInvited, u.invitations.organiser_invited),
        (OrganiserSignInLocked, u.invitations.sign_in_locked),
    )
    organisers.ignore(
        (ApiKeyRevoked, OrganiserSignedOut),
        f"copied into the revocation record by notifications.revocations{group_suffix}; no digest changes",
    )
    add_revocation_group(registry, tables.delivery.revocations, "notifications.revocations" + group_suffix)

    async def member_joined(uow: UnitOfWork, envelope: Envelope, event: MemberJoined) -> None:
        await u.activity.member_joined(uow, envelope, event)
        await u.follow_ups.member_joined(uow, envelope, event)

    async def members_joined(uow: UnitOfWork, run: list[tuple[Envelope, MemberJoined]]) -> None:
        await u.activity.members_joined(uow, run)
        await u.follow_ups.members_joined(uow, run)

    async def member_erased(uow: UnitOfWork, envelope: Envelope, event: MemberErased) -> None:
        await u.activity.member_erased(uow, envelope, event)
        await u.organisers.member_erased(uow, envelope, event)
        await u.follow_ups.member_erased(uow, envelope, event)

    async def action_taken(uow: UnitOfWork, envelope: Envelope, event: ActionTaken) -> None:
        await u.activity.action_taken(uow, envelope, event)
        await u.follow_ups.action_taken(uow, envelope, event)

    async def action_linked(uow: UnitOfWork, envelope: Envelope, event: ActionLinkedToMember) -> None:
        await u.activity.action_linked(uow, envelope, event)
        await u.follow_ups.linked(uow, envelope, event)

    activity.route(
        (ActionLinkedToMember, action_linked),
        (RsvpLinkedToMember, u.follow_ups.linked),
        (MemberJoined, member_joined),
        (MemberProfileUpdated, u.organisers.member_profile_updated),
        (MemberLeft, u.activity.member_left),
        (MemberErased, member_erased),
        (MeetingScheduled, u.activity.meeting_changed),
        (MeetingUpdated, u.activity.meeting_changed),
        (MeetingCancelled, u.activity.meeting_cancelled),
        (RsvpReceived, u.activity.rsvp_changed),
        (RsvpCancelled, u.activity.rsvp_changed),
        (PromotedFromWaitlist, u.activity.rsvp_changed),
        (CampaignLaunched, u.activity.campaign_launched),
        (ActionTaken, action_taken),
    )
    activity.on_run(MemberJoined)(members_joined)
    activity.ignore(
        (MemberConfirmed, ConsentChanged, EngagementLevelChosen, MeetingReminderDue, AttendanceRecorded,
         AskPublished, CampaignClosed, MpLetterRequested, JoinChangeRequested, MemberRightsConfirmationRequested,
         MemberDataRequested, MemberDataReady,
         RsvpRepeated, ActionRepeated, MpLetterAwaitingConfirmation,
         PledgePublished),
        "digests and follow-ups report arrivals, meetings, RSVPs, campaigns launched and actions; not these (yet)",
    )
    return registry


async def dispatch_released(
    uow: UnitOfWork, released: list[list[Envelope]], groups: tuple[Handlers, ...]
) -> None:
    """Handle events released from parking, subject by subject, each through the group that handles its type
    (`Handlers.dispatch`: a type no group handles raises UnhandledEvent). A subject's lone MemberJoined (the
    common case under load: a join and its key travel on different topics, and the join often comes first) is
    welcomed with the others in one run, through the group's run handler; anything else one by one, in order."""
    joins: list[tuple[Envelope, Any]] = []

    async def flush() -> None:
        if joins:
            await _group_of(groups, MemberJoined.event_type).run_handlers[MemberJoined.event_type](uow, list(joins))
            joins.clear()

    for envelopes in released:
        for envelope in envelopes:
            if envelope.type == MemberJoined.event_type and len(envelopes) == 1:
                joins.append((envelope, MemberJoined.model_validate(envelope.data)))
                continue
            await flush()
            await _group_of(groups, envelope.type).dispatch(uow, envelope)
    await flush()


def _group_of(groups: tuple[Handlers, ...], event_type: str) -> Handlers:
    """The group with an entry (a handler or a decision to ignore) for `event_type`; else the first, whose
    dispatch raises UnhandledEvent."""
    return next((g for g in groups if event_type in g.consumed_types()), groups[0])
