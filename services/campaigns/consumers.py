"""The campaigns service's Kafka entrypoints: thin adapters from other services' events to its service layer.

`campaigns.engagement` keeps what the service itself needs (members, units, meetings, RSVPs, attendance and its
own actions, for asks and the engagement ladder); `campaigns.reporting` feeds the reporting read model only.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns.engagement import EngagementService
from services.campaigns.reporting import PROJECTION, REPORTING_TOPICS, project_batch
from services.campaigns.service import CampaignsService
from shared import topics
from shared.consumer import EventConsumer
from shared.events import catalog as ev
from shared.events.envelope import Envelope

ENGAGEMENT_GROUP = "campaigns.engagement"
REPORTING_GROUP = "campaigns.reporting"


def build_engagement_consumer(campaigns: CampaignsService, engagement: EngagementService,
                              group: str = ENGAGEMENT_GROUP) -> EventConsumer:
    consumer = EventConsumer(
        group,
        (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION, topics.EVENTS_MEETINGS, topics.EVENTS_RSVPS,
         topics.CAMPAIGNS_ACTIONS),
        "Members, units, meetings, RSVPs, attendance and actions: asks linked to meetings and the engagement "
        "ladder (publishes EngagementLevelChanged); erases on MemberErased",
    )

    @consumer.on(ev.MemberJoined)
    async def member_joined(envelope: Envelope, event: ev.MemberJoined, session: AsyncSession) -> None:
        await campaigns.link_joined_member(session, event)
        await engagement.member_joined(session, event)

    @consumer.on(ev.MemberProfileUpdated)
    async def member_profile_updated(envelope: Envelope, event: ev.MemberProfileUpdated,
                                     session: AsyncSession) -> None:
        await engagement.member_profile_updated(session, event)

    @consumer.on(ev.MemberLeft)
    async def member_left(envelope: Envelope, event: ev.MemberLeft, session: AsyncSession) -> None:
        await engagement.member_left(session, event.member_id)

    @consumer.on(ev.MemberErased)
    async def member_erased(envelope: Envelope, event: ev.MemberErased, session: AsyncSession) -> None:
        await campaigns.member_erased(session, event.member_id)
        await engagement.member_erased(session, event.member_id)

    @consumer.on(ev.OrganisationUnitDefined)
    async def unit_defined(envelope: Envelope, event: ev.OrganisationUnitDefined, session: AsyncSession) -> None:
        await engagement.unit_defined(session, event)

    @consumer.on(ev.RoleGranted)
    async def role_granted(envelope: Envelope, event: ev.RoleGranted, session: AsyncSession) -> None:
        await engagement.role_granted(session, event)

    @consumer.on(ev.MeetingScheduled)
    async def meeting_scheduled(envelope: Envelope, event: ev.MeetingScheduled, session: AsyncSession) -> None:
        await campaigns.meeting_scheduled(session, event)

    @consumer.on(ev.MeetingUpdated)
    async def meeting_updated(envelope: Envelope, event: ev.MeetingUpdated, session: AsyncSession) -> None:
        await campaigns.meeting_scheduled(session, event)

    @consumer.on(ev.MeetingCancelled)
    async def meeting_cancelled(envelope: Envelope, event: ev.MeetingCancelled, session: AsyncSession) -> None:
        await campaigns.meeting_cancelled(session, event)

    @consumer.on(ev.RsvpReceived)
    async def rsvp_received(envelope: Envelope, event: ev.RsvpReceived, session: AsyncSession) -> None:
        await campaigns.rsvp_received(session, event)

    @consumer.on(ev.AttendanceRecorded)
    async def attendance_recorded(envelope: Envelope, event: ev.AttendanceRecorded, session: AsyncSession) -> None:
        await engagement.attendance_recorded(session, event)

    @consumer.on(ev.ActionTaken)
    async def action_taken(envelope: Envelope, event: ev.ActionTaken, session: AsyncSession) -> None:
        await engagement.action_taken(session, event)

    return consumer


def build_reporting_consumer(group: str = REPORTING_GROUP) -> EventConsumer:
    consumer = EventConsumer(
        group,
        REPORTING_TOPICS,
        "The reporting read model, built only from events: members, units, meetings, RSVPs and attendance, "
        "campaigns, asks, actions and engagement levels",
    )
    for model, project in PROJECTION.items():
        consumer.on(model)(project)
    consumer.on_batch(project_batch)  # a fetched batch's facts go in one INSERT per table
    return consumer
