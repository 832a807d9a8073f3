"""Notifications' Kafka entrypoints: thin adapters from events to the service layer."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.service import NotificationService
from shared import topics
from shared.consumer import EventConsumer
from shared.events.catalog import MemberJoined, SubjectKeyIssued
from shared.events.envelope import Envelope


def build_consumers(service: NotificationService) -> list[EventConsumer]:
    keys = EventConsumer(
        "notifications.keys",
        (topics.MEMBERSHIP_SUBJECT_KEYS,),
        "Copies members' data keys so their sealed fields can be read; a tombstone destroys the copy",
    )

    @keys.on(SubjectKeyIssued)
    async def key_issued(envelope: Envelope, event: SubjectKeyIssued, session: AsyncSession) -> None:
        await service.remember_key(session, event.key_id, event.key)

    @keys.on_tombstone
    async def key_destroyed(key: str, session: AsyncSession) -> None:
        await service.forget_key(session, key)

    members = EventConsumer("notifications", (topics.MEMBERSHIP_MEMBERS,), "Welcome emails and the recipient mirror")

    @members.on(MemberJoined)
    async def member_joined(envelope: Envelope, event: MemberJoined, session: AsyncSession) -> None:
        await service.member_joined(session, envelope, event)

    return [keys, members]
