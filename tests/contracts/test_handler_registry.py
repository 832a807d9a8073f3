"""Every service's handler registry: each event type on a consumer group's topics is handled or ignored on purpose.

A type nobody decided about would be dropped silently by the consumer (and raise `UnhandledEvent` when a parked
event of that type is released); this test names it instead.
"""

from __future__ import annotations

import importlib

import pytest

from shared import asyncapi
from shared.events.catalog import EVENT_MODELS, MemberConfirmed, MemberJoined
from shared.events.envelope import Envelope
from shared.handlers import Handlers, Registry, UnhandledEvent


def _consumer_handlers(service: str) -> list[Handlers]:
    app = importlib.import_module(f"services.{service}.main").create_app()
    return [consumer.handlers for consumer in app.state.runtime.consumers]


@pytest.mark.parametrize("service", asyncapi.available_services())
def test_every_event_type_a_group_reads_has_a_handler_or_a_decision(service):
    groups = _consumer_handlers(service)
    registry = Registry(service)
    registry.groups = {h.group: h for h in groups}
    assert registry.unlisted(EVENT_MODELS) == {}, (
        f"{service}: give these event types a handler or `ignore(..., why)` in services/{service}/consumers.py"
    )


def test_a_registry_lists_what_it_lacks():
    registry = Registry("test")
    handlers = registry.group("g", (MemberJoined.topic,))
    handlers.ignore((MemberConfirmed,), "not needed here")
    assert MemberJoined.event_type in registry.unlisted(EVENT_MODELS)["g"]
    assert MemberConfirmed.event_type not in registry.unlisted(EVENT_MODELS)["g"]


async def test_dispatching_a_type_without_an_entry_raises_instead_of_dropping_it():
    handlers = Handlers("g", (MemberJoined.topic,))
    envelope = Envelope.wrap(MemberConfirmed(member_id="m", confirmed_at="2026-12-01T10:00:00Z"))
    with pytest.raises(UnhandledEvent):
        await handlers.dispatch(None, envelope)  # type: ignore[arg-type]
    handlers.ignore((MemberConfirmed,), "on purpose")
    await handlers.dispatch(None, envelope)  # type: ignore[arg-type]  # ignored on purpose: nothing happens
