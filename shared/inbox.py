"""Inbox: an event's side effects and the record that it was handled commit in one transaction.

A redelivered event (at-least-once delivery) finds its (consumer, event_id) row and does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, String, Table, Uuid, func, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database
from shared.events.envelope import Envelope


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(120), nullable=False),
        Column("event_id", Uuid, nullable=False),
        Column("event_type", String(80), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id"),
    )


class Inbox:
    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table
        # One statement claims any number of events (arrays, so its text never changes and is compiled once).
        self._claim = text(
            f"INSERT INTO {table.name} (consumer, event_id, event_type) "
            "SELECT :consumer, e.id, e.type FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS varchar[])) "
            "AS e(id, type) ON CONFLICT DO NOTHING RETURNING event_id"
        )

    async def claim(self, session: AsyncSession, consumer: str, envelopes: Sequence[Envelope]) -> set[uuid.UUID]:
        """Insert the events' inbox rows in the session's transaction; return the ids not seen before.

        A concurrent duplicate blocks on the primary key until the first transaction ends, then is skipped.
        """
        ids: dict[uuid.UUID, str] = {}
        for env in envelopes:
            ids.setdefault(env.event_id, env.type)
        if not ids:
            return set()
        ordered = sorted(ids)  # the same order in every transaction: two claiming one id wait, not deadlock
        result = await session.execute(
            self._claim, {"consumer": consumer, "ids": ordered, "types": [ids[i] for i in ordered]}
        )
        return set(result.scalars())
