"""Events released from parking (their key arrived) go through the handler registry, never a second one:
services/notifications/consumers.py's dispatch_released, with recording handlers and no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.notifications.consumers import dispatch_released
from shared.events.catalog import MemberConfirmed, MemberJoined, RoleGranted, RsvpReceived
from shared.events.envelope import Envelope
from shared.handlers import Handlers, UnhandledEvent
from shared.uow import UnitOfWork
from tests.support.people import member_joined

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def joined(member_id: str) -> Envelope:
    return Envelope.wrap(member_joined(member_id))


def confirmed(member_id: str) -> Envelope:
    return Envelope.wrap(MemberConfirmed(member_id=member_id, confirmed_at=NOW))


def role_granted() -> Envelope:
    return Envelope.wrap(
        RoleGranted(organiser_id=str(uuid.uuid4()), role="organiser", scope_type="network", scope_id=None)
    )


def rsvp() -> Envelope:
    return Envelope.wrap(RsvpReceived(meeting_id="m1", rsvp_id=str(uuid.uuid4()), status="going"))


class Recorder:
    """The `notifications` and `notifications.organisers` groups, with handlers that note what they were given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.members = Handlers("notifications", ("membership.members", "events.rsvps"))
        self.organisers = Handlers("notifications.organisers", ("membership.organisation",))
        for group, model in (
            (self.members, MemberJoined),
            (self.members, MemberConfirmed),
            (self.organisers, RoleGranted),
        ):
            group.on(model)(self.handler(group.group))
        self.members.on_run(MemberJoined)(self.run_handler)

    def handler(self, group: str) -> Any:
        async def handle(uow: UnitOfWork, envelope: Envelope, event: Any) -> None:
            self.calls.append((group, envelope.event_id))

        return handle

    async def run_handler(self, uow: UnitOfWork, run: list[tuple[Envelope, Any]]) -> None:
        self.calls.append(("run", [envelope.event_id for envelope, _ in run]))

    @property
    def groups(self) -> tuple[Handlers, ...]:
        return (self.members, self.organisers)


def uow() -> UnitOfWork:
    return UnitOfWork(None, None)  # type: ignore[arg-type]  # the recording handlers touch no database


async def test_each_released_event_goes_to_the_group_that_handles_its_type():
    recorder = Recorder()
    ada, grant = confirmed("ada"), role_granted()
    await dispatch_released(uow(), [[ada], [grant]], recorder.groups)
    assert recorder.calls == [("notifications", ada.event_id), ("notifications.organisers", grant.event_id)]


async def test_lone_released_joins_are_welcomed_as_one_run_and_a_subjects_several_events_one_by_one_in_order():
    recorder = Recorder()
    ada, bo, cy_joined, cy_confirmed = joined("ada"), joined("bo"), joined("cy"), confirmed("cy")
    await dispatch_released(uow(), [[ada], [bo], [cy_joined, cy_confirmed]], recorder.groups)
    assert recorder.calls == [
        ("run", [ada.event_id, bo.event_id]),
        ("notifications", cy_joined.event_id),
        ("notifications", cy_confirmed.event_id),
    ]


async def test_a_released_event_nobody_handles_raises_instead_of_vanishing():
    recorder = Recorder()
    with pytest.raises(UnhandledEvent):
        await dispatch_released(uow(), [[rsvp()]], recorder.groups)
