"""Notifications' Kafka entrypoints: thin adapters from events to the service layer."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.meetings import MeetingNotifications
from services.notifications.service import NotificationService
from shared import topics
from shared.consumer import EventConsumer
from shared.events.catalog import (
    AttendanceRecorded,
    ConsentChanged,
    MeetingCancelled,
    MeetingReminderDue,
    MeetingScheduled,
    MeetingUpdated,
    MemberConfirmed,
    MemberErased,
    MemberJoined,
    MemberLeft,
    MemberProfileUpdated,
    PromotedFromWaitlist,
    RsvpCancelled,
    RsvpKeyIssued,
    RsvpReceived,
    SubjectKeyIssued,
)
from shared.events.envelope import Envelope


def _route(consumer: EventConsumer, model: type[Any], handler: Any) -> None:
    """Register `handler(session, envelope, event)` for `model` on `consumer`."""

    async def adapter(envelope: Envelope, event: Any, session: AsyncSession) -> None:
        await handler(session, envelope, event)

    consumer.on(model)(adapter)


def build_consumers(service: NotificationService, meetings: MeetingNotifications) -> list[EventConsumer]:
    keys = EventConsumer(
        "notifications.keys",
        (topics.MEMBERSHIP_SUBJECT_KEYS, topics.EVENTS_SUBJECT_KEYS),
        "Copies members' and RSVPs' data keys so their sealed fields can be read; a tombstone destroys the copy",
    )

    async def key_issued(session: AsyncSession, envelope: Envelope, event: Any) -> None:
        await service.remember_key(session, event.key_id, event.key)

    _route(keys, SubjectKeyIssued, key_issued)
    _route(keys, RsvpKeyIssued, key_issued)

    @keys.on_tombstone
    async def key_destroyed(key: str, session: AsyncSession) -> None:
        await service.forget_key(session, key)

    members = EventConsumer(
        "notifications",
        (topics.MEMBERSHIP_MEMBERS, topics.EVENTS_MEETINGS, topics.EVENTS_RSVPS),
        "Welcome emails, the recipient mirror and suppressions; meeting announcements, RSVP emails, reminders",
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
    ):
        _route(members, model, handler)
    return [keys, members]
