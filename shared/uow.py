"""Unit of work: what every use case and every event handler receives, and nothing else of the plumbing.

A unit of work is one PostgreSQL transaction (`session`) plus the three things a use case may do besides reading
and writing its own tables: `emit` events (outbox rows in the same transaction, their correlation and causation ids
filled in), `tombstone` a key on a compacted topic, and run something `on_commit` (wake a sender, say). Whoever
opens the transaction (`UnitsOfWork.begin` for a use case, the consumer for a batch of events) commits it and then
runs the callbacks; a transaction that rolls back forgets them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database
from shared.events.envelope import Envelope, EventData
from shared.logging import correlation_id_var, get_logger
from shared.outbox import Outbox

log = get_logger(__name__)


class UnitOfWork:
    """One transaction's session, its outbox and its commit hooks, in the context of one request or one event."""

    def __init__(
        self,
        session: AsyncSession,
        outbox: Outbox,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        _hooks: list[Callable[[], None]] | None = None,
    ) -> None:
        self.session = session
        self.outbox = outbox
        self.correlation_id = correlation_id or str(uuid.uuid4())
        self.causation_id = causation_id
        self._hooks: list[Callable[[], None]] = [] if _hooks is None else _hooks

    async def emit(self, *events: EventData, occurred_at: datetime | None = None) -> list[Envelope]:
        """Queue events for publishing (each to its type's topic), in this transaction and in this order."""
        envelopes = [
            Envelope.wrap(e, correlation_id=self.correlation_id, causation_id=self.causation_id,
                          occurred_at=occurred_at)
            for e in events
        ]
        await self.outbox.add(self.session, *envelopes)
        return envelopes

    async def emit_all(self, events: Sequence[EventData]) -> list[Envelope]:
        """`emit` for a list built by a rule."""
        return await self.emit(*events)

    async def publish(self, *envelopes: Envelope) -> None:
        """Queue envelopes built elsewhere (a batch whose events carry each its own request's correlation id)."""
        await self.outbox.add(self.session, *envelopes)

    async def tombstone(self, topic: str, key: str) -> None:
        """A null value for `key` on a compacted topic (a destroyed key): the log cleaner then drops its records."""
        await self.outbox.add_tombstone(self.session, topic, key)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed (never if it rolls back)."""
        self._hooks.append(callback)

    def caused_by(self, envelope: Envelope) -> UnitOfWork:
        """The same transaction, in the context of handling `envelope`: what it emits carries the event's
        correlation id, and the event's id as causation id."""
        return UnitOfWork(
            self.session,
            self.outbox,
            correlation_id=envelope.correlation_id,
            causation_id=str(envelope.event_id),
            _hooks=self._hooks,
        )

    def committed(self) -> None:
        """Called by whoever committed the transaction: run the hooks (a failing hook is logged, not raised)."""
        hooks, self._hooks[:] = list(self._hooks), []
        for hook in hooks:
            try:
                hook()
            except Exception as exc:  # a hook only wakes something up; the transaction is already committed
                log.warning("after-commit hook failed", error=repr(exc))


def current_correlation_id() -> str | None:
    """The correlation id of the request or event being handled, for work handed on to another task (a batch of
    joins, whose events each carry their own request's id)."""
    return correlation_id_var.get()


class UnitsOfWork:
    """Opens units of work on a service's database and outbox (one per service, made by its composition root)."""

    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox

    @asynccontextmanager
    async def begin(self, *, correlation_id: str | None = None) -> AsyncIterator[UnitOfWork]:
        """One transaction: committed when the block ends normally (then the hooks run), rolled back on any
        exception. The correlation id defaults to the current request's."""
        async with self.db.transaction() as session:
            uow = self.over(session, correlation_id=correlation_id)
            yield uow
        uow.committed()

    def over(self, session: AsyncSession, *, correlation_id: str | None = None) -> UnitOfWork:
        """A unit of work on a transaction the caller owns (and commits, then calls `committed()`)."""
        return UnitOfWork(session, self.outbox, correlation_id=correlation_id or correlation_id_var.get())
