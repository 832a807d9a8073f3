"""`python -m services.campaigns rebuild-reporting`: the reporting read model again, from the beginning of the topics.

The events are replayed into a shadow schema while the live model keeps serving and updating. Then, holding
an exclusive lock on the live tables (the live consumer waits; dashboards still read), the shadow catches up to
the topics' ends, and the live tables and their inbox are replaced by the shadow's in the same transaction. Events
the live consumer meets afterwards are already in the swapped inbox and are skipped; nothing is lost or counted
twice. With `check`, nothing is swapped: the shadow's figures are compared with the live ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns.consumers import REPORTING_GROUP
from services.campaigns.reporting import (
    PROJECTED_TYPES,
    REPORTING_TOPICS,
    Reports,
    Scope,
    project_batch,
)
from shared.consumer import H_REPLAY_FOR_GROUP
from shared.db import Database
from shared.events.envelope import Envelope
from shared.logging import get_logger

log = get_logger(__name__)
SHADOW = "rpt_rebuild"
LIVE = "public"


@dataclass
class RebuildResult:
    records: int = 0
    applied: int = 0
    skipped: int = 0
    swapped: bool = False
    differences: list[str] = field(default_factory=list)


class TopicReader:
    """Reads every partition of the reporting topics from the beginning, without a consumer group."""

    def __init__(self, bootstrap: str, topic_names: tuple[str, ...] = REPORTING_TOPICS) -> None:
        self.bootstrap = bootstrap
        self.topic_names = topic_names
        self.consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    client_id=f"campaigns-rebuild-{uuid.uuid4().hex[:6]}", max_poll_records=1000)
        await consumer.start()
        self.consumer = consumer
        cluster = await consumer._client.fetch_all_metadata()
        self.partitions = [TopicPartition(t, p) for t in self.topic_names
                           for p in sorted(cluster.partitions_for_topic(t) or set())]
        consumer.assign(self.partitions)
        await consumer.seek_to_beginning(*self.partitions)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def end_offsets(self) -> dict[TopicPartition, int]:
        assert self.consumer is not None
        return await self.consumer.end_offsets(self.partitions)

    async def read_until(self, ends: dict[TopicPartition, int], apply: Callable[[list[Any]], Any]) -> int:
        """Hand every record up to `ends` (exclusive) to `apply`, a batch at a time, in each partition's order."""
        assert self.consumer is not None
        total = 0
        while True:
            pending = [tp for tp in self.partitions if await self.consumer.position(tp) < ends[tp]]
            if not pending:
                return total
            batch = await self.consumer.getmany(*pending, timeout_ms=1000, max_records=1000)
            records = [r for tp, recs in batch.items() for r in recs if r.offset < ends[tp]]
            if records:
                await apply(records)
                total += len(records)


async def apply_records(session: AsyncSession, records: list[Any], group: str, result: RebuildResult, *,
                        careful: bool = True) -> None:
    """Project records exactly as the live consumer does, each once by its event id (the inbox).

    `careful` puts each event in a savepoint and skips one that fails (the live consumer would have
    dead-lettered it: no effect either way); without it, the first failure aborts the batch.
    """
    for record in records:
        result.records += 1
        if record.value is None:
            continue
        headers = {k: v.decode(errors="replace") for k, v in (record.headers or [])}
        if headers.get(H_REPLAY_FOR_GROUP) not in (None, group):
            continue
        try:
            envelope = Envelope.from_bytes(record.value)
        except Exception:
            result.skipped += 1
            continue
        entry = PROJECTED_TYPES.get(envelope.type)
        if entry is None:
            continue
        if not careful:
            result.applied += await _project(session, envelope, entry, group)
            continue
        try:
            async with session.begin_nested():
                result.applied += await _project(session, envelope, entry, group)
        except Exception as exc:
            log.warning("rebuild skipped an event", event_id=str(envelope.event_id), error=repr(exc))
            result.skipped += 1


async def apply_batch(session: AsyncSession, records: list[Any], group: str, result: RebuildResult) -> None:
    """`apply_records` for a whole batch with few statements: one claims every event's inbox row, and the rows that
    facts (joins, actions, RSVPs ...) write go in one INSERT per table. Same effect as projecting the events one by
    one: an updating event (a member leaving) runs on its own, after the pending rows when it changes one of them.
    Any failure aborts the batch (the caller then replays it carefully, event by event)."""
    events: list[tuple[Envelope, Any, Any]] = []
    for record in records:
        result.records += 1
        if record.value is None:
            continue
        headers = {k: v.decode(errors="replace") for k, v in (record.headers or [])}
        if headers.get(H_REPLAY_FOR_GROUP) not in (None, group):
            continue
        envelope = Envelope.from_bytes(record.value)
        entry = PROJECTED_TYPES.get(envelope.type)
        if entry is not None:
            events.append((envelope, *entry))
    if not events:
        return
    inbox = tables.rpt_inbox
    claimed = set((await session.execute(
        pg_insert(inbox).on_conflict_do_nothing().returning(inbox.c.event_id),
        [{"consumer": group, "event_id": env.event_id, "event_type": env.type} for env, _, _ in events],
    )).scalars())
    claimed_events: list[tuple[Envelope, Any, Any]] = []
    for envelope, model, _ in events:
        if envelope.event_id not in claimed:
            continue
        claimed.discard(envelope.event_id)  # the same event twice in a batch counts once
        data = model.model_validate(envelope.data) if envelope.version == model.event_version else envelope.payload()
        claimed_events.append((envelope, model, data))
    result.applied += len(claimed_events)
    await project_batch(session, claimed_events)


async def _project(session: AsyncSession, envelope: Envelope, entry: tuple[Any, Any], group: str) -> int:
    model, project = entry
    inbox = tables.rpt_inbox
    claimed = (await session.execute(
        pg_insert(inbox).values(consumer=group, event_id=envelope.event_id, event_type=envelope.type)
        .on_conflict_do_nothing().returning(inbox.c.event_id)
    )).first()
    if claimed is None:
        return 0
    data = model.model_validate(envelope.data) if envelope.version == model.event_version else envelope.payload()
    await project(envelope, data, session)
    return 1


async def _into_shadow(db: Database, records: list[Any], group: str, result: RebuildResult) -> None:
    """A batch in one transaction; if any event in it fails, the batch again with each event on its own."""
    fast = RebuildResult()
    try:
        async with db.transaction() as session:
            await session.execute(text(f"SET LOCAL search_path TO {SHADOW}, {LIVE}"))
            await apply_batch(session, records, group, fast)
    except Exception:
        async with db.transaction() as session:
            await session.execute(text(f"SET LOCAL search_path TO {SHADOW}, {LIVE}"))
            await apply_records(session, records, group, result, careful=True)
        return
    result.records += fast.records
    result.applied += fast.applied
    result.skipped += fast.skipped


async def _create_shadow(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE"))
        await session.execute(text(f"CREATE SCHEMA {SHADOW}"))
        for t in tables.REPORTING_TABLES:
            await session.execute(text(f"CREATE TABLE {SHADOW}.{t.name} (LIKE {LIVE}.{t.name} INCLUDING ALL)"))


async def _drop_shadow(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE"))


async def snapshot(db: Database, reports: Reports, scope: Scope, *, schema: str = LIVE) -> dict[str, Any]:
    """The figures of one scope, read from the live model or the shadow."""
    async with db.transaction() as session:
        if schema != LIVE:
            await session.execute(text(f"SET LOCAL search_path TO {schema}, {LIVE}"))
        return await reports.snapshot(session, scope)


async def scopes_to_compare(db: Database, schema: str = LIVE) -> list[Scope]:
    async with db.transaction() as session:
        if schema != LIVE:
            await session.execute(text(f"SET LOCAL search_path TO {schema}, {LIVE}"))
        units = (await session.execute(text("SELECT kind, unit_id FROM rpt_units WHERE kind = 'region' "
                                            "ORDER BY unit_id"))).all()
    return [Scope()] + [Scope(kind, unit_id) for kind, unit_id in units]


async def rebuild(db: Database, bootstrap: str, reports: Reports, *, group: str = REPORTING_GROUP,
                  check: bool = False) -> RebuildResult:
    """Replay the reporting topics into a shadow schema, then swap it in (or, with `check`, compare)."""
    result = RebuildResult()
    await _create_shadow(db)
    reader = TopicReader(bootstrap)
    await reader.start()
    try:
        async def into_shadow(records: list[Any]) -> None:
            await _into_shadow(db, records, group, result)

        await reader.read_until(await reader.end_offsets(), into_shadow)
        log.info("reporting replayed into the shadow", records=result.records, applied=result.applied)
        if check:
            for scope in await scopes_to_compare(db, SHADOW):
                current = await snapshot(db, reports, scope)
                rebuilt = await snapshot(db, reports, scope, schema=SHADOW)
                if current != rebuilt:
                    parts = ", ".join(k for k in current if current[k] != rebuilt.get(k))
                    result.differences.append(f"{scope.scope_type} {scope.scope_id or ''}".strip() + f" ({parts})")
            return result
        names = [t.name for t in tables.REPORTING_TABLES]
        async with db.transaction() as live:
            await live.execute(text(f"LOCK TABLE {', '.join(f'{LIVE}.{n}' for n in names)} IN EXCLUSIVE MODE"))
            await reader.read_until(await reader.end_offsets(), into_shadow)  # what arrived meanwhile
            for name in names:
                where = " WHERE consumer = :group" if name == tables.rpt_inbox.name else ""
                await live.execute(text(f"DELETE FROM {LIVE}.{name}{where}"), {"group": group})
                await live.execute(text(f"INSERT INTO {LIVE}.{name} SELECT * FROM {SHADOW}.{name}{where}"),
                                   {"group": group})
        result.swapped = True
        log.info("reporting read model rebuilt", records=result.records, applied=result.applied,
                 skipped=result.skipped)
        return result
    finally:
        await reader.stop()
        await _drop_shadow(db)
