"""`python -m services.campaigns rebuild-reporting`: the reporting read model again, from the beginning of the topics.

The events are replayed into a shadow schema while the live model keeps serving and updating: projected in memory
and written once (COPY, indexes built afterwards), or, if the database refuses any of those rows, again from the
beginning event by event as the live consumer projects them. Then, holding
an exclusive lock on the live tables (the live consumer waits; dashboards still read), the shadow catches up to
the topics' ends, and the live tables and their inbox are replaced by the shadow's in the same transaction. Events
the live consumer meets afterwards are already in the swapped inbox and are skipped; nothing is lost or counted
twice. With `check`, nothing is swapped: the shadow's figures are compared with the live ones.
"""

from __future__ import annotations

import functools
import gc
import operator
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import Field, TypeAdapter, create_model
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns import tallies
from services.campaigns.consumers import REPORTING_GROUP
from services.campaigns.projection import (
    PROJECTED_TYPES,
    REPORTING_TOPICS,
    MemoryRows,
    memory_rows,
    project_batch,
    project_in_memory,
)
from services.campaigns.reports import Reports, Scope
from shared.consumer import H_REPLAY_FOR_GROUP, typed_data
from shared.db import Database
from shared.events.envelope import Envelope, EventData
from shared.kafka_security import kafka_client_options
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.uow import UnitOfWork, UnitsOfWork

log = get_logger(__name__)
SHADOW = "rpt_rebuild"
LIVE = "public"
# The bulk replay holds the projected rows of this many events in memory at most (under 1 kB each: the rebuild of
# the benchmark's 1M events peaks at 1 GB); a longer history is written out at that point and the rest replayed
# batch by batch.
BULK_LIMIT = 2_000_000


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
                                    client_id=f"campaigns-rebuild-{uuid.uuid4().hex[:6]}", max_poll_records=1000,
                                    **kafka_client_options())
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

    async def rewind(self) -> None:
        assert self.consumer is not None
        await self.consumer.seek_to_beginning(*self.partitions)

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


async def apply_records(uow: UnitOfWork, records: list[Any], group: str, result: RebuildResult, *,
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
            result.applied += await _project(uow, envelope, entry, group)
            continue
        try:
            async with uow.session.begin_nested():
                result.applied += await _project(uow, envelope, entry, group)
        except Exception as exc:
            log.warning("rebuild skipped an event", event_id=str(envelope.event_id), error=repr(exc))
            result.skipped += 1


async def apply_batch(uow: UnitOfWork, records: list[Any], group: str, result: RebuildResult) -> None:
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
    claimed = set((await uow.session.execute(
        pg_insert(inbox).on_conflict_do_nothing().returning(inbox.c.event_id),
        [{"consumer": group, "event_id": env.event_id, "event_type": env.type} for env, _, _ in events],
    )).scalars())
    claimed_events: list[tuple[Envelope, Any, Any]] = []
    for envelope, model, _ in events:
        if envelope.event_id not in claimed:
            continue
        claimed.discard(envelope.event_id)  # the same event twice in a batch counts once
        data = typed_data(model, envelope)
        claimed_events.append((envelope, model, data))
    result.applied += len(claimed_events)
    await project_batch(uow, claimed_events)


async def _project(uow: UnitOfWork, envelope: Envelope, entry: tuple[Any, Any], group: str) -> int:
    model, project = entry
    inbox = tables.rpt_inbox
    claimed = (await uow.session.execute(
        pg_insert(inbox).values(consumer=group, event_id=envelope.event_id, event_type=envelope.type)
        .on_conflict_do_nothing().returning(inbox.c.event_id)
    )).first()
    if claimed is None:
        return 0
    data = typed_data(model, envelope)
    await project(uow, envelope, data)
    return 1


def _fresh_list_defaults(model: type[EventData]) -> type[EventData]:
    """The model, but a list field left out gets a new list from a factory rather than a deep copy of the default
    `[]` (a sixth of the bulk replay's time); the same value, checked the same way."""
    fresh: dict[str, Any] = {name: (f.annotation, Field(default_factory=list)) for name, f in model.model_fields.items()
                             if isinstance(f.default, list) and f.default == []}
    return create_model(model.__name__, __base__=model, **fresh) if fresh else model


def _typed_envelopes() -> TypeAdapter[Any]:
    """Validates a record's bytes, in one pass, as the envelope of one projected type with its typed `data`: the
    same models and checks as `Envelope.from_bytes` and then the data's model, without the dict in between."""
    typed: list[Any] = []
    for name, (model, _) in PROJECTED_TYPES.items():
        of_type: Any = Literal[name]
        typed.append(create_model(f"{name}Envelope", __base__=Envelope, type=(of_type, ...),
                                  data=(_fresh_list_defaults(model), ...)))
    any_of: Any = functools.reduce(operator.or_, typed)
    return TypeAdapter(Annotated[any_of, Field(discriminator="type")])


class BulkShadow:
    """The replay into the empty shadow, projected in memory and written once: the inbox by a set of event ids
    instead of an INSERT … ON CONFLICT per batch, the facts and what later events change in them as rows in memory
    (`projection.project_in_memory`), then each table by COPY into the shadow without its indexes, which are built
    afterwards. The rows are those the batch-by-batch replay writes (tests/campaigns/test_rebuild_bulk.py)."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.rows: MemoryRows = memory_rows()
        self.seen: set[uuid.UUID] = set()
        self.inbox: list[tuple[str, uuid.UUID, str]] = []
        self.typed = _typed_envelopes()

    def add(self, records: list[Any], result: RebuildResult) -> None:
        """What `apply_records` does to these records (skipping the same ones), on the rows in memory."""
        group, typed, seen, inbox, rows = self.group, self.typed, self.seen, self.inbox, self.rows
        for record in records:
            result.records += 1
            if record.value is None:
                continue
            if record.headers:
                headers = {k: v.decode(errors="replace") for k, v in record.headers}
                if headers.get(H_REPLAY_FOR_GROUP) not in (None, group):
                    continue
            try:
                envelope = typed.validate_json(record.value)
                model = PROJECTED_TYPES[envelope.type][0]
                if envelope.version != model.event_version:
                    raise ValueError("another version of the event")
                data = envelope.data
                if envelope.event_id in seen:
                    continue
            except ValueError:  # pydantic's ValidationError too: the general path decides, as `apply_records`
                try:
                    envelope = Envelope.from_bytes(record.value)
                except Exception:
                    result.skipped += 1
                    continue
                entry = PROJECTED_TYPES.get(envelope.type)
                if entry is None or envelope.event_id in seen:  # (the inbox is claimed before the data is read)
                    continue
                model = entry[0]
                try:
                    data = typed_data(model, envelope)
                except Exception as exc:
                    log.warning("rebuild skipped an event", event_id=str(envelope.event_id), error=repr(exc))
                    result.skipped += 1
                    continue
            seen.add(envelope.event_id)
            inbox.append((group, envelope.event_id, envelope.type))
            project_in_memory(rows, envelope, model, data)
            result.applied += 1

    @property
    def size(self) -> int:
        return len(self.inbox)

    async def write(self, db: Database, schema: str = SHADOW) -> None:
        """Every row into the shadow (made by `_create_shadow(indexed=False)`), then the shadow's indexes."""
        started = time.monotonic()
        async with db.transaction() as session:
            conn = await (await session.connection()).get_raw_connection()
            assert conn.driver_connection is not None
            copy = conn.driver_connection.copy_records_to_table  # asyncpg's COPY … FROM STDIN (binary)
            await copy(tables.rpt_inbox.name, schema_name=schema, columns=["consumer", "event_id", "event_type"],
                       records=self.inbox)
            for table in tables.REPORTING_TABLES:
                held = self.rows.get(table.name)
                if not held:
                    continue
                columns = [c.name for c in table.columns]
                await copy(table.name, schema_name=schema, columns=columns,
                           records=(tuple(row[c] for c in columns) for row in held.values()))
            copied = time.monotonic()
            for statement in await _index_statements(session, schema):
                await session.execute(text(statement))
            indexed = time.monotonic()
            # The dashboard's tallies, once for everyone (the projection keeps them from here on).
            await session.execute(text(f"SET LOCAL search_path TO {schema}, {LIVE}"))
            await tallies.recount_everyone(session)
        log.info("reporting shadow written", events=self.size, copy_s=round(copied - started, 2),
                 indexes_s=round(indexed - copied, 2), tallies_s=round(time.monotonic() - indexed, 2))
        self.rows, self.seen, self.inbox = memory_rows(), set(), []


async def _index_statements(session: AsyncSession, schema: str) -> list[str]:
    """What builds the indexes and key constraints the shadow's tables lack: those of the live tables."""
    statements: list[str] = []
    for t in tables.REPORTING_TABLES:
        live, shadow = f"{LIVE}.{t.name}", f"{schema}.{t.name}"
        for name, definition in (await session.execute(text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) "
            "AND contype IN ('p', 'u', 'x') ORDER BY conname"), {"t": live})).all():
            statements.append(f'ALTER TABLE {shadow} ADD CONSTRAINT "{name}" {definition}')
        for (definition,) in (await session.execute(text(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = CAST(:t AS regclass) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) "
            "ORDER BY i.indexrelid"), {"t": live})).all():
            prefix = f" ON {live} "
            if prefix not in definition:
                raise RuntimeError(f"an index of {live} not understood: {definition}")
            statements.append(definition.replace(prefix, f" ON {shadow} ", 1))
    return statements


async def _replay_in_bulk(uows: UnitsOfWork, reader: TopicReader, group: str, result: RebuildResult) -> None:
    """The topics up to their current ends into a new shadow through `BulkShadow`; past `BULK_LIMIT` events, the
    rest batch by batch into the shadow written so far."""
    db = uows.db
    await _create_shadow(db, indexed=False)
    bulk: BulkShadow | None = BulkShadow(group)

    async def into_shadow(records: list[Any]) -> None:
        nonlocal bulk
        if bulk is None:
            await _into_shadow(uows, records, group, result)
            return
        bulk.add(records, result)
        # What the bulk replay holds lives until it is written: the garbage collector need not walk it again and
        # again (a third of the replay's time, more the longer the history).
        gc.freeze()
        if bulk.size >= BULK_LIMIT:
            await bulk.write(db)
            bulk = None
            gc.unfreeze()

    try:
        await reader.read_until(await reader.end_offsets(), into_shadow)
        if bulk is not None:
            await bulk.write(db)
    finally:
        gc.unfreeze()


async def _into_shadow(uows: UnitsOfWork, records: list[Any], group: str, result: RebuildResult) -> None:
    """A batch in one unit of work; if any event in it fails, the batch again with each event on its own."""
    fast = RebuildResult()
    try:
        async with uows.begin() as uow:
            await uow.session.execute(text(f"SET LOCAL search_path TO {SHADOW}, {LIVE}"))
            await apply_batch(uow, records, group, fast)
    except Exception:
        async with uows.begin() as uow:
            await uow.session.execute(text(f"SET LOCAL search_path TO {SHADOW}, {LIVE}"))
            await apply_records(uow, records, group, result, careful=True)
        return
    result.records += fast.records
    result.applied += fast.applied
    result.skipped += fast.skipped


async def _create_shadow(db: Database, *, indexed: bool = True, schema: str = SHADOW) -> None:
    """The live tables' empty copies (unlogged: a crash loses only the rebuild), without their indexes for a bulk
    load, which builds them afterwards."""
    like = "INCLUDING ALL" if indexed else "INCLUDING ALL EXCLUDING INDEXES"
    async with db.transaction() as session:
        await session.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        await session.execute(text(f"CREATE SCHEMA {schema}"))
        for t in tables.REPORTING_TABLES:
            await session.execute(text(f"CREATE UNLOGGED TABLE {schema}.{t.name} (LIKE {LIVE}.{t.name} {like})"))


async def _drop_shadow(db: Database, schema: str = SHADOW) -> None:
    async with db.transaction() as session:
        await session.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


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


async def _swap(live: AsyncSession, group: str, shadow: str = SHADOW, target: str = LIVE) -> int:
    """Make each live table hold the shadow's rows (the inbox: this group's), in the caller's transaction: the live
    rows the shadow lacks are deleted and the shadow rows the live table lacks inserted, so a rebuild that confirms
    the live model rewrites nothing. An inbox row kept keeps when it was first processed. Returns the rows changed.

    Each table is compared with its shadow once (a full join on the key, which the lock holds the live consumer
    back during): the keys whose rows differ or exist on one side only are kept in a temporary table, then those
    live rows deleted and those shadow rows inserted."""
    await live.execute(text("SET LOCAL work_mem = '256MB'"))  # for the comparisons of whole tables
    changed = 0
    for t in tables.REPORTING_TABLES:
        inbox = t is tables.rpt_inbox
        names = [c.name for c in t.columns if not (inbox and c.name == "processed_at")]
        keys = [c.name for c in t.primary_key.columns]
        where = " WHERE consumer = :group" if inbox else ""
        live_rows, shadow_rows = (f"(SELECT * FROM {schema}.{t.name}{where})" for schema in (target, shadow))
        on = " AND ".join(f"l.{k} = s.{k}" for k in keys)
        await live.execute(text(
            "CREATE TEMPORARY TABLE swap_keys ON COMMIT DROP AS SELECT "
            + ", ".join([*(f"l.{k} AS l_{k}" for k in keys), *(f"s.{k} AS s_{k}" for k in keys)])
            + f" FROM {live_rows} l FULL JOIN {shadow_rows} s ON {on} WHERE ROW("
            + ", ".join(f"l.{c}" for c in names) + ") IS DISTINCT FROM ROW(" + ", ".join(f"s.{c}" for c in names) + ")"
        ), {"group": group})
        deleted = await live.execute(text(
            f"DELETE FROM {target}.{t.name} t USING swap_keys d WHERE d.l_{keys[0]} IS NOT NULL AND "
            + " AND ".join(f"t.{k} = d.l_{k}" for k in keys)
        ))
        inserted = await live.execute(text(
            f"INSERT INTO {target}.{t.name} ({', '.join(names)}) SELECT {', '.join(f's.{c}' for c in names)} "
            f"FROM {shadow}.{t.name} s JOIN swap_keys d ON " + " AND ".join(f"s.{k} = d.s_{k}" for k in keys)
        ))
        await live.execute(text("DROP TABLE swap_keys"))
        changed += deleted.rowcount + inserted.rowcount  # type: ignore[attr-defined]
    return changed


async def rebuild(db: Database, bootstrap: str, reports: Reports, *, group: str = REPORTING_GROUP,
                  check: bool = False) -> RebuildResult:
    """Replay the reporting topics into a shadow schema, then swap it in (or, with `check`, compare)."""
    result = RebuildResult()
    # The projection's handlers take a unit of work; a rebuild emits nothing, so its outbox stays unused.
    uows = UnitsOfWork(db, Outbox(tables.delivery.outbox))
    reader = TopicReader(bootstrap)
    await reader.start()
    try:
        async def into_shadow(records: list[Any]) -> None:
            await _into_shadow(uows, records, group, result)

        started = time.monotonic()
        try:
            await _replay_in_bulk(uows, reader, group, result)
        except Exception as exc:  # a row the database refuses: the careful replay skips just that event
            log.warning("the bulk replay failed; replaying event by event", error=repr(exc))
            result.records = result.applied = result.skipped = 0
            await _create_shadow(db)
            await reader.rewind()
            await reader.read_until(await reader.end_offsets(), into_shadow)
        log.info("reporting replayed into the shadow", records=result.records, applied=result.applied,
                 seconds=round(time.monotonic() - started, 2))
        if check:
            compare_started = time.monotonic()
            for scope in await scopes_to_compare(db, SHADOW):
                current = await snapshot(db, reports, scope)
                rebuilt = await snapshot(db, reports, scope, schema=SHADOW)
                if current != rebuilt:
                    parts = ", ".join(k for k in current if current[k] != rebuilt.get(k))
                    result.differences.append(f"{scope.scope_type} {scope.scope_id or ''}".strip() + f" ({parts})")
            log.info("reporting figures compared", seconds=round(time.monotonic() - compare_started, 2))
            return result
        names = [t.name for t in tables.REPORTING_TABLES]
        async with db.transaction() as live:
            await live.execute(text(f"LOCK TABLE {', '.join(f'{LIVE}.{n}' for n in names)} IN EXCLUSIVE MODE"))
            await reader.read_until(await reader.end_offsets(), into_shadow)  # what arrived meanwhile
            swap_started = time.monotonic()
            changed = await _swap(live, group)
        result.swapped = True
        log.info("reporting read model rebuilt", records=result.records, applied=result.applied,
                 skipped=result.skipped, rows_changed=changed, swap_s=round(time.monotonic() - swap_started, 2))
        return result
    finally:
        await reader.stop()
        await _drop_shadow(db)
