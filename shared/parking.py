"""Parking: an event that needs something not yet here (its subject's key) waits in a table, not on its partition.

A consumer parks the event in the same transaction as its inbox row, so the partition keeps flowing;
when the missing piece arrives, the events parked for that subject are released, in their original order.
Events that follow a parked one for the same subject are parked too, so a subject's order is kept.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events.envelope import Envelope


def parked_events_table(metadata: MetaData) -> Table:
    return Table(
        "parked_events",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("subject_id", String(64), nullable=False, index=True),
        Column("reason", String(200), nullable=False),
        Column("envelope", LargeBinary, nullable=False),
        Column("parked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class ParkingLot:
    def __init__(self, table: Table) -> None:
        self.table = table

    async def lock_subject(self, session: AsyncSession, subject_id: str) -> None:
        """Serialise, until commit, the handlers that park or release this subject's events.

        Without it, a key arriving while its event is being parked in another transaction would find
        nothing to release, and the event would wait for ever.
        """
        await self.lock_subjects(session, [subject_id])

    async def lock_subjects(self, session: AsyncSession, subject_ids: list[str]) -> None:
        """`lock_subject` for several subjects with one statement, in the list's order (callers keep the order a
        batch's records have, the same in every consumer, so two transactions never wait for each other in a
        circle)."""
        if subject_ids:
            await session.execute(_LOCK_MANY, {"ids": subject_ids})

    async def park(
        self, session: AsyncSession, envelope: Envelope, reason: str, *, waits_for: str | None = None
    ) -> None:
        """Park `envelope` until `waits_for` (default: its subject) is released."""
        await self.park_many(session, [(envelope, waits_for or envelope.subject_id)], reason)

    async def park_many(self, session: AsyncSession, parked: list[tuple[Envelope, str]], reason: str) -> None:
        """`park` for several events, each with the subject it waits for, in one round trip (in the list's
        order, which is the order they are released in)."""
        if parked:
            rows = [{"subject_id": subject, "reason": reason, "envelope": env.to_bytes()} for env, subject in parked]
            await session.execute(insert(self.table), rows)

    async def has_parked(self, session: AsyncSession, subject_id: str) -> bool:
        row = await session.execute(select(self.table.c.id).where(self.table.c.subject_id == subject_id).limit(1))
        return row.first() is not None

    async def release(self, session: AsyncSession, subject_id: str) -> list[Envelope]:
        """Remove and return the subject's parked events, oldest first."""
        return (await self.release_many(session, [subject_id])).get(subject_id, [])

    async def release_many(self, session: AsyncSession, subject_ids: list[str]) -> dict[str, list[Envelope]]:
        """`release` for several subjects with one statement: each one's parked events, oldest first."""
        if not subject_ids:
            return {}
        t = self.table
        rows = (
            await session.execute(
                delete(t).where(t.c.subject_id == any_(bindparam("ids", type_=ARRAY(String))))
                .returning(t.c.id, t.c.subject_id, t.c.envelope),
                {"ids": subject_ids},
            )
        ).all()
        released: dict[str, list[Envelope]] = {}
        for r in sorted(rows, key=lambda r: r.id):
            released.setdefault(r.subject_id, []).append(Envelope.from_bytes(r.envelope))
        return released


# unnest yields the array's elements in order, so the locks are taken in the caller's order.
_LOCK_MANY = text("SELECT pg_advisory_xact_lock(hashtext(s)) FROM unnest(CAST(:ids AS text[])) AS s")
