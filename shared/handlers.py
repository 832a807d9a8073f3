"""Event handlers: one protocol, `handler(uow, envelope, event)`, and one registry per service.

A service's registry (`Registry`) holds a `Handlers` per consumer group: for each event type the group reads,
either a handler or an explicit decision to ignore it (with the reason). The group's consumer dispatches through
it, and so does the release of events that were parked until something they needed arrived: an event type with no
entry is an error there (`UnhandledEvent`), never a silent drop. `Registry.unlisted` tells which event types of the
catalog travel on a group's topics without an entry; a test keeps that empty.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from shared.events.envelope import Envelope, EventData
from shared.uow import UnitOfWork

# `async def handler(uow, envelope, event)`: one event, its typed data.
Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]
# `async def handler(uow, [(envelope, event), ...])`: consecutive events of one type, each subject at most once,
# with the same effect as the type's handler on each in that order.
RunHandler = Callable[[UnitOfWork, list[tuple[Envelope, Any]]], Awaitable[None]]
# `async def handler(uow, [(envelope, model, event), ...])`: a whole batch's claimed events at once.
BatchHandler = Callable[[UnitOfWork, list[tuple[Envelope, Any, Any]]], Awaitable[None]]
# `async def handler(uow, key)`: a null value (a compacted topic's deletion marker) for `key`.
TombstoneHandler = Callable[[UnitOfWork, str], Awaitable[None]]


class UnhandledEvent(LookupError):
    """An event reached a dispatch that has neither a handler nor a decision to ignore its type."""


class Handlers:
    """What one consumer group does with each event type on its topics."""

    def __init__(self, group: str, topics: tuple[str, ...], description: str = "", *, gather_s: float = 0.0) -> None:
        self.group = group
        self.topics = topics
        self.description = description
        # A group nobody waits on (a timeline) may let a record gather the ones behind it for this long and handle
        # them as one batch (one transaction, one offset commit) instead of a batch each as they trickle in.
        self.gather_s = gather_s
        self.handlers: dict[str, tuple[type[EventData], Handler]] = {}
        self.run_handlers: dict[str, RunHandler] = {}
        self.ignored: dict[str, str] = {}  # event type -> why this group does nothing with it
        self.tombstone_handler: TombstoneHandler | None = None
        self.batch_handler: BatchHandler | None = None

    def on(self, model: type[EventData]) -> Callable[[Handler], Handler]:
        """Register the handler of one event type."""

        def register(fn: Handler) -> Handler:
            self.handlers[model.event_type] = (model, fn)
            return fn

        return register

    def route(self, *pairs: tuple[type[EventData], Handler]) -> None:
        """Register several `(model, handler)` pairs at once."""
        for model, fn in pairs:
            self.on(model)(fn)

    def on_run(self, model: type[EventData]) -> Callable[[RunHandler], RunHandler]:
        """Optional, beside `on(model)`: apply consecutive events of this type in a batch at once."""

        def register(fn: RunHandler) -> RunHandler:
            self.run_handlers[model.event_type] = fn
            return fn

        return register

    def on_batch(self, fn: BatchHandler) -> BatchHandler:
        """Optional: apply a batch's claimed events at once, with the same effect as their handlers in order."""
        self.batch_handler = fn
        return fn

    def on_tombstone(self, fn: TombstoneHandler) -> TombstoneHandler:
        self.tombstone_handler = fn
        return fn

    def ignore(self, models: Iterable[type[EventData]], why: str) -> None:
        """Decide, on purpose, that this group does nothing with these event types."""
        for model in models:
            self.ignored[model.event_type] = why

    def entry(self, event_type: str) -> tuple[type[EventData], Handler] | None:
        return self.handlers.get(event_type)

    async def dispatch(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Handle one event (a released parked one, say) in `uow`'s transaction, in the event's context."""
        entry = self.handlers.get(envelope.type)
        if entry is None:
            if envelope.type in self.ignored:
                return
            raise UnhandledEvent(f"{self.group} has no handler for {envelope.type} v{envelope.version}")
        model, handler = entry
        await handler(uow.caused_by(envelope), envelope, typed_data(model, envelope))

    def consumed_types(self) -> set[str]:
        return set(self.handlers) | set(self.ignored)


class Registry:
    """One service's event handlers, by consumer group."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.groups: dict[str, Handlers] = {}

    def group(self, name: str, topics: tuple[str, ...], description: str = "", *, gather_s: float = 0.0) -> Handlers:
        if name in self.groups:
            raise ValueError(f"consumer group {name} registered twice")
        handlers = self.groups[name] = Handlers(name, topics, description, gather_s=gather_s)
        return handlers

    def __getitem__(self, group: str) -> Handlers:
        return self.groups[group]

    def unlisted(self, catalog: Iterable[type[EventData]]) -> dict[str, list[str]]:
        """Per group, the catalog's event types that travel on its topics with neither a handler nor a decision."""
        gaps: dict[str, list[str]] = {}
        for name, handlers in self.groups.items():
            missing = sorted(
                m.event_type for m in catalog
                if m.topic in handlers.topics and m.event_type not in handlers.consumed_types()
            )
            if missing:
                gaps[name] = missing
        return gaps


def typed_data(model: type[EventData], envelope: Envelope) -> Any:
    """The event's typed data: validated against the handler's model, or the catalog's for another version."""
    return model.model_validate(envelope.data) if envelope.version == model.event_version else envelope.payload()
