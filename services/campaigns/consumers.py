"""The campaigns service's Kafka entrypoints: thin adapters from other services' events to its service layer.

`campaigns.engagement` keeps what the service itself needs (members, units, meetings, RSVPs, attendance and its
own actions, for asks and the engagement ladder); `campaigns.reporting` feeds the reporting read model only.
"""

from __future__ import annotations

from services.campaigns import db as tables
from services.campaigns.actions import ActionsService
from services.campaigns.engagement import EngagementService
from services.campaigns.linking import MemberLinks
from services.campaigns.member_data import answer_member_data
from services.campaigns.projection import PROJECTION, REPORTING_TOPICS, project_batch
from services.campaigns.service import CampaignsService
from shared import topics
from shared.events import catalog as ev
from shared.events.envelope import Envelope
from shared.handlers import Registry
from shared.revocations import REVOCATION_EVENTS, add_revocation_group
from shared.uow import UnitOfWork

ENGAGEMENT_GROUP = "campaigns.engagement"
REPORTING_GROUP = "campaigns.reporting"
REVOCATIONS_GROUP = "campaigns.revocations"


def build_registry(campaigns: CampaignsService, actions: ActionsService, engagement: EngagementService, *,
                   engagement_group: str = ENGAGEMENT_GROUP, reporting_group: str = REPORTING_GROUP,
                   revocations_group: str = REVOCATIONS_GROUP) -> Registry:
    registry = Registry("campaigns")
    add_revocation_group(registry, tables.delivery.revocations, revocations_group)
    links: MemberLinks = actions.links
    people = engagement.people
    keys = registry.group(
        f"{engagement_group}.keys",
        (topics.MEMBERSHIP_SUBJECT_KEYS,),
        "Copies members' data keys, to read the names and addresses the members mirror keeps sealed (the long "
        "tail); a tombstone destroys the copy",
    )

    @keys.on(ev.SubjectKeyIssued)
    async def key_issued(uow: UnitOfWork, envelope: Envelope, event: ev.SubjectKeyIssued) -> None:
        await people.keys_issued(uow, [event])

    @keys.on_run(ev.SubjectKeyIssued)
    async def keys_issued(uow: UnitOfWork, run: list[tuple[Envelope, ev.SubjectKeyIssued]]) -> None:
        await people.keys_issued(uow, [event for _, event in run])

    @keys.on_tombstone
    async def key_destroyed(uow: UnitOfWork, key: str) -> None:
        await people.key_destroyed(uow, key)
    consumer = registry.group(
        engagement_group,
        (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION, topics.EVENTS_MEETINGS, topics.EVENTS_RSVPS,
         topics.CAMPAIGNS_ACTIONS),
        "Members, units, meetings, RSVPs, attendance and actions: asks linked to meetings and the engagement "
        "ladder (publishes EngagementLevelChanged); erases on MemberErased",
    )

    @consumer.on(ev.MemberJoined)
    async def member_joined(uow: UnitOfWork, envelope: Envelope, event: ev.MemberJoined) -> None:
        await links.member_joined(uow, event)  # their earlier actions first: the ladder counts them at once
        await engagement.member_joined(uow, event)

    @consumer.on(ev.MemberProfileUpdated)
    async def member_profile_updated(uow: UnitOfWork, envelope: Envelope, event: ev.MemberProfileUpdated) -> None:
        await engagement.member_profile_updated(uow, event)
        if event.email_hash and await links.email_changed(uow, event.member_id, event.email_hash):
            await engagement.recompute(uow, event.member_id)

    @consumer.on(ev.MemberLeft)
    async def member_left(uow: UnitOfWork, envelope: Envelope, event: ev.MemberLeft) -> None:
        await engagement.member_left(uow, event.member_id)

    @consumer.on(ev.MemberErased)
    async def member_erased(uow: UnitOfWork, envelope: Envelope, event: ev.MemberErased) -> None:
        await actions.member_erased(uow, event.member_id)
        await engagement.member_erased(uow, event.member_id)
        await people.key_destroyed(uow, event.member_id)

    @consumer.on(ev.MemberDataRequested)
    async def member_data_requested(uow: UnitOfWork, envelope: Envelope, event: ev.MemberDataRequested) -> None:
        await answer_member_data(uow, people.keys, event)

    @consumer.on(ev.OrganisationUnitDefined)
    async def unit_defined(uow: UnitOfWork, envelope: Envelope, event: ev.OrganisationUnitDefined) -> None:
        await engagement.unit_defined(uow, event)

    @consumer.on(ev.RoleGranted)
    async def role_granted(uow: UnitOfWork, envelope: Envelope, event: ev.RoleGranted) -> None:
        await engagement.role_granted(uow, event)

    @consumer.on(ev.MeetingScheduled)
    async def meeting_scheduled(uow: UnitOfWork, envelope: Envelope, event: ev.MeetingScheduled) -> None:
        await campaigns.meeting_scheduled(uow, event)

    @consumer.on(ev.MeetingUpdated)
    async def meeting_updated(uow: UnitOfWork, envelope: Envelope, event: ev.MeetingUpdated) -> None:
        await campaigns.meeting_scheduled(uow, event)

    @consumer.on(ev.MeetingCancelled)
    async def meeting_cancelled(uow: UnitOfWork, envelope: Envelope, event: ev.MeetingCancelled) -> None:
        await campaigns.meeting_cancelled(uow, event)

    @consumer.on(ev.RsvpReceived)
    async def rsvp_received(uow: UnitOfWork, envelope: Envelope, event: ev.RsvpReceived) -> None:
        await actions.rsvp_received(uow, event)

    @consumer.on(ev.RsvpLinkedToMember)
    async def rsvp_linked(uow: UnitOfWork, envelope: Envelope, event: ev.RsvpLinkedToMember) -> None:
        await links.rsvp_linked(uow, event)
        await engagement.recompute(uow, event.member_id)

    @consumer.on(ev.AttendanceRecorded)
    async def attendance_recorded(uow: UnitOfWork, envelope: Envelope, event: ev.AttendanceRecorded) -> None:
        await engagement.attendance_recorded(uow, event)

    @consumer.on(ev.ActionTaken)
    async def action_taken(uow: UnitOfWork, envelope: Envelope, event: ev.ActionTaken) -> None:
        await links.action_arrived(uow, event)
        await engagement.action_taken(uow, event)

    consumer.ignore(
        (ev.MemberConfirmed, ev.ConsentChanged, ev.EngagementLevelChosen, ev.OrganiserInvited,
         ev.MeetingReminderDue, ev.RsvpCancelled, ev.PromotedFromWaitlist, ev.MpLetterRequested,
         ev.JoinChangeRequested, ev.MemberRightsConfirmationRequested, ev.PledgePublished, ev.ActionLinkedToMember,
         ev.MemberDataReady),
        "neither the asks nor the engagement ladder depend on these (reporting reads what it needs itself; an "
        "action's link to a member is made here, in the same transaction as ActionLinkedToMember)",
    )
    consumer.ignore(
        (ev.RsvpRepeated, ev.ActionRepeated, ev.MpLetterAwaitingConfirmation),
        "a repeat changes nothing, and a letter waiting for its writer's confirmation is not an action yet",
    )
    consumer.ignore((*REVOCATION_EVENTS, ev.OrganiserSignInLocked),
                    f"revocations are copied by {revocations_group}; a sign-in lockout is notifications' to tell")

    reporting = registry.group(
        reporting_group,
        REPORTING_TOPICS,
        "The reporting read model, built only from events: members, units, meetings, RSVPs and attendance, "
        "campaigns, asks, actions and engagement levels",
    )
    reporting.route(*PROJECTION.items())  # the projections are handlers themselves
    reporting.ignore(
        (ev.MemberConfirmed, ev.ConsentChanged, ev.EngagementLevelChosen, ev.MeetingReminderDue,
         ev.MpLetterRequested, ev.OrganiserInvited, ev.RoleGranted, ev.JoinChangeRequested,
         ev.MemberRightsConfirmationRequested, ev.PledgePublished, ev.MemberDataRequested, ev.MemberDataReady),
        "no report counts these (ActionTaken already counts a letter to an MP; a data download is no activity)",
    )
    reporting.ignore(
        (ev.RsvpRepeated, ev.ActionRepeated, ev.MpLetterAwaitingConfirmation),
        "a repeat changes nothing, and a letter counts once confirmed (ActionTaken)",
    )
    reporting.ignore((*REVOCATION_EVENTS, ev.OrganiserSignInLocked), "no report counts these")

    reporting.on_batch(project_batch)  # a fetched batch's facts go in one INSERT per table

    return registry

