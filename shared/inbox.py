"""Inbox: an event's side effects and the record that it was handled commit in one transaction.

A redelivered event (at-least-once delivery) finds its (consumer, event_id) row and does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, String, Table, Uuid, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database


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

    async def process(
        self,
        consumer: str,
        event_id: uuid.UUID,
        event_type: str,
        effect: Callable[[AsyncSession], Awaitable[None]],
    ) -> bool:
        """Run `effect` once per (consumer, event_id); return False when it had already run."""
        async with self.db.transaction() as session:
            # A concurrent duplicate blocks on the primary key until the first commits, then skips.
            claimed = await session.execute(
                pg_insert(self.table)
                .values(consumer=consumer, event_id=event_id, event_type=event_type)
                .on_conflict_do_nothing()
                .returning(self.table.c.event_id)
            )
            if claimed.first() is None:
                return False
            await effect(session)
            return True
