"""Transactional outbox: events are written with the state change, then relayed to Kafka.

A use case calls `add_to_outbox(session, envelope)` inside its transaction. `OutboxRelay` publishes
pending rows with an idempotent producer (acks=all). Rows are spread over a fixed number of shards
by their Kafka key; a relay locks the shards it works on with FOR UPDATE SKIP LOCKED, so several
relay instances share the work, two running relays never send the same row, and each key keeps its order.
It is woken by LISTEN/NOTIFY, with a periodic poll as backstop. A row's headers (the event's type, version,
correlation id and, with tracing on, its W3C trace context) become the Kafka record's headers.

Delivery is at least once (docs/delivery-guarantees.md, docs/decisions/0010-outbox-at-least-once.md): a row is
marked published as soon as Kafka acknowledges its own send, but a relay that dies between the acknowledgement and
that mark (or with sends in flight) leaves the row pending, and the relay that takes the shard over sends it again.
Every consumer therefore deduplicates by `event_id` (the inboxes, shared/inbox.py); so must any other reader.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
    func,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from shared import metrics, tracing
from shared.database_url import libpq_url
from shared.db import Database
from shared.events.envelope import Envelope, EventData
from shared.kafka_security import kafka_client_options
from shared.logging import get_logger

log = get_logger(__name__)

OUTBOX_SHARDS = 16
NOTIFY_CHANNEL = "outbox"


def outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and its shard-lock table, added to a service's own metadata."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("event_type", String(80), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("key", Text, nullable=False),
        Column("shard", SmallInteger, nullable=False),
        Column("payload", LargeBinary, nullable=True),  # NULL: a tombstone (compacted topics)
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index("ix_outbox_pending", "shard", "id", postgresql_where=text("published_at IS NULL")),
        Index("ix_outbox_published_at", "published_at", postgresql_where=text("published_at IS NOT NULL")),
    )
    shards = Table("outbox_shard", metadata, Column("shard", SmallInteger, primary_key=True, autoincrement=False))
    return outbox, shards


# Used by migrations: a statement-level trigger so a transaction that writes many rows notifies once.
NOTIFY_TRIGGER_SQL = (
    f"""
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
  RETURN NULL;
END;
$$ LANGUAGE plpgsql
""",
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()",
    f"INSERT INTO outbox_shard (shard) SELECT generate_series(0, {OUTBOX_SHARDS - 1}) ON CONFLICT DO NOTHING",
)
DROP_TRIGGER_SQL = ("DROP TRIGGER IF EXISTS outbox_notify ON outbox", "DROP FUNCTION IF EXISTS outbox_notify()")


def shard_of(key: str) -> int:
    return zlib.crc32(key.encode()) % OUTBOX_SHARDS


class Outbox:
    """Writes events into the outbox table of the service that owns it."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def add(self, session: AsyncSession, *envelopes: Envelope, topic: str | None = None) -> None:
        """Queue envelopes for publishing; each goes to its event type's topic unless `topic` is given."""
        if not envelopes:
            return
        with self.rows(envelopes, topic) as rows:
            await session.execute(insert(self.table), rows)

    @contextmanager
    def rows(self, envelopes: Sequence[Envelope], topic: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """The outbox rows of `envelopes`, for a caller that writes them in a statement of its own (within the
        block: the trace spans of their emitting last as long as it)."""
        targets = [topic or _topic_of(env) for env in envelopes]
        with tracing.emitting(envelopes, targets) as trace_headers:  # W3C trace context, if tracing is on
            yield [
                {
                    "event_id": env.event_id,
                    "event_type": env.type,
                    "topic": target,
                    "key": env.subject_id,
                    "shard": shard_of(env.subject_id),
                    "payload": env.to_bytes(),
                    "headers": {"type": env.type, "version": str(env.version), "correlation_id": env.correlation_id,
                                **trace_context},
                }
                for env, target, trace_context in zip(envelopes, targets, trace_headers, strict=True)
            ]  # fmt: skip

    async def add_tombstone(self, session: AsyncSession, topic: str, key: str) -> None:
        """A null value for `key` on a compacted topic: the log cleaner then drops the key's records."""
        await session.execute(
            insert(self.table),
            [{"event_id": uuid.uuid4(), "event_type": "tombstone", "topic": topic, "key": key,
              "shard": shard_of(key), "payload": None, "headers": {"type": "tombstone"}}],
        )

    async def add_events(
        self,
        session: AsyncSession,
        events: Sequence[EventData],
        *,
        correlation_id: str | None,
        causation_id: str | None = None,
    ) -> list[Envelope]:
        envelopes = [Envelope.wrap(e, correlation_id=correlation_id, causation_id=causation_id) for e in events]
        await self.add(session, *envelopes)
        return envelopes


def _topic_of(env: Envelope) -> str:
    from shared.events.catalog import model_for

    return model_for(env.type, env.version).topic


# A pass locks up to $1 shards that have pending rows (SKIP LOCKED: another relay's shards are left to it), then
# reads their pending rows in id order. Two statements: the second's snapshot is taken after the locks are held,
# so it sees the rows another relay marked as published before releasing a shard (in one statement the snapshot
# would predate the lock, and such rows would be published twice).
_LOCK_SHARDS_SQL = """
SELECT sh.shard FROM outbox_shard sh
WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.shard = sh.shard AND o.published_at IS NULL)
ORDER BY random() LIMIT $1 FOR UPDATE OF sh SKIP LOCKED
"""
_PENDING_SQL = """
SELECT o.id, o.topic, o.key, o.payload, o.headers::text AS headers FROM outbox o
WHERE o.shard = ANY($1::smallint[]) AND o.published_at IS NULL ORDER BY o.id LIMIT $2
"""


class OutboxRelay:
    """Publishes pending outbox rows to Kafka; run one or more per service.

    It works on a connection of its own (asyncpg, no ORM: a pass is a few statements) and is woken by
    LISTEN/NOTIFY on another. A pass locks shards, reads their rows and sends them all; a third connection marks
    each row published as soon as Kafka acknowledges it (and every earlier row of its key); once every send has
    settled the pass commits, which releases the shards; a pass that found fewer shards and rows than it
    may take drained everything it could lock, so the relay sleeps until the next NOTIFY (or poll).
    """

    def __init__(
        self,
        db: Database,
        bootstrap_servers: str,
        service: str,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        retention: timedelta = timedelta(hours=72),
        shards_per_batch: int = OUTBOX_SHARDS // 2,
        linger_ms: int = 1,
        gather_s: float = 0.0,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.db = db
        self.bootstrap_servers = bootstrap_servers
        # TLS and SASL (shared/kafka_security.py); None: as the environment's settings say, when first connecting
        self.kafka_options = kafka_options
        self.service = service
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.retention = retention
        self.shards_per_batch = shards_per_batch
        self.linger_ms = linger_ms
        # How long a NOTIFY is left to gather others before the pass it wakes: a service committing one event a
        # transaction at a steady rate (the sender's NotificationSent, one an email) then publishes them a pass
        # every `gather_s` (one transaction, one Kafka request, one mark) instead of a pass each. Their rows are
        # committed meanwhile; only their publishing waits (0: at once).
        self.gather_s = gather_s
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._conn: asyncpg.Connection | None = None
        self._marks: asyncpg.Connection | None = None  # marks rows published as Kafka acknowledges them
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._listen_task: asyncio.Task | None = None
        self._last_prune = 0.0
        self._last_metrics = 0.0
        self.published_total = 0

    # lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.service}")
        self._listen_task = asyncio.create_task(self._listen(), name=f"outbox-listen-{self.service}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in (self._task, self._listen_task):
            if task:
                task.cancel()
        for task in (self._task, self._listen_task):
            if task:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:
                pass
            self._producer = None
        await self._reset_connection()

    def wake(self) -> None:
        self._wake.set()

    # internals -----------------------------------------------------------------------------------
    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                enable_idempotence=True,
                acks="all",
                linger_ms=self.linger_ms,
                request_timeout_ms=15000,
                client_id=f"{self.service}-outbox-relay",
                **(kafka_client_options() if self.kafka_options is None else self.kafka_options),
            )
            try:
                await producer.start()
            except Exception:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(_asyncpg_dsn(self.db))
        return self._conn

    async def _reset_connection(self) -> None:
        conns, self._conn, self._marks = (self._conn, self._marks), None, None
        for conn in conns:
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.close(), timeout=5)
                except Exception:
                    conn.terminate()

    async def _listen(self) -> None:
        """Hold a LISTEN connection; reconnect forever (PostgreSQL may restart)."""
        dsn = _asyncpg_dsn(self.db)
        while not self._stopping:
            conn = None
            try:
                conn = await asyncpg.connect(dsn)
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
                self._wake.set()  # catch up on anything written while we were not listening
                while not self._stopping and not conn.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox listen connection failed", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                if conn is not None and not conn.is_closed():
                    try:
                        await conn.close()
                    except Exception:
                        pass

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
                except TimeoutError:
                    pass
            if self.gather_s > 0 and self._wake.is_set() and not self._stopping:
                await asyncio.sleep(self.gather_s)
            self._wake.clear()
            try:
                await self.drain()
                now = time.monotonic()
                if now - self._last_metrics >= self.poll_interval_s:
                    self._last_metrics = now
                    await self._update_backlog_metrics()
                await self._maybe_prune()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay pass failed; will retry", error=repr(exc), retry_in_s=backoff)
                await self._reset_producer()
                await self._reset_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _reset_producer(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:
                pass
            self._producer = None

    async def drain(self) -> int:
        """Publish until a pass finds no more than it could take at once; return how many were published.

        Rows committed meanwhile, or in shards another relay holds, come with their NOTIFY (or the next poll).
        """
        total = 0
        while True:
            n, more = await self._publish_pass()
            total += n
            if not more:
                return total

    async def publish_batch(self) -> int:
        """One pass: lock shards with pending rows, publish their rows in order, mark them; how many went out."""
        return (await self._publish_pass())[0]

    async def _publish_pass(self) -> tuple[int, bool]:
        producer = await self._ensure_producer()
        conn = await self._connection()
        marks = await self._mark_connection()
        # BEGIN, the shards, their rows, then COMMIT: the transaction holds the shards' locks while the rows go out.
        # Rows are marked published on a second connection as Kafka acknowledges them (_Marker), each in its own
        # short transaction committed before the shards' locks are released.
        await conn.execute("BEGIN")
        marker: _Marker | None = None
        try:
            shards = [r[0] for r in await conn.fetch(_LOCK_SHARDS_SQL, self.shards_per_batch)]
            rows = await conn.fetch(_PENDING_SQL, shards, self.batch_size) if shards else []
            if not rows:
                await conn.execute("COMMIT")
                return 0, False
            marker = _Marker(marks)
            send = producer.send
            sends = tracing.sending(self.service)  # a span a row, the child of the row's emitter (if tracing is on)
            futures = []
            try:
                for row in rows:
                    raw = row["headers"]
                    fields = json.loads(raw) if raw and raw != "{}" else {}
                    sends.start(row["topic"], fields)
                    headers = [(k, str(v).encode()) for k, v in fields.items()]
                    future = await send(row["topic"], value=row["payload"], key=row["key"].encode(), headers=headers)
                    marker.follow(row["id"], row["key"], row["topic"], future)
                    futures.append(future)
                results = await asyncio.gather(*futures, return_exceptions=True)
            except BaseException as exc:
                sends.finish([exc] * len(rows))
                await marker.close()
                raise
            sends.finish(results)
            await marker.close()  # every acknowledged row's mark committed (or the pass fails: the rows go again)
            await conn.execute("COMMIT")
        except BaseException:
            if marker is not None:
                marker.abandon()
            await self._rollback(conn)
            raise
        for topic, n in marker.per_topic.items():
            metrics.EVENTS_PUBLISHED.labels(self.service, topic).inc(n)
        self.published_total += marker.marked
        first_error = next((r for r in results if isinstance(r, BaseException)), None)
        if first_error is not None:
            raise first_error
        more = len(rows) >= self.batch_size or len(shards) >= self.shards_per_batch
        return marker.marked, more

    async def _mark_connection(self) -> asyncpg.Connection:
        if self._marks is None or self._marks.is_closed():
            self._marks = await asyncpg.connect(_asyncpg_dsn(self.db))
        return self._marks

    async def _rollback(self, conn: asyncpg.Connection) -> None:
        """End a failed pass's transaction; a connection that cannot is dropped (a new one is made next pass)."""
        try:
            if not conn.is_closed() and conn.is_in_transaction():
                await asyncio.wait_for(conn.execute("ROLLBACK"), timeout=5)
        except BaseException:
            await self._reset_connection()

    async def _update_backlog_metrics(self) -> None:
        conn = await self._connection()
        row = await conn.fetchrow("SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL")
        assert row is not None
        metrics.OUTBOX_BACKLOG.labels(self.service).set(row[0])
        age = (datetime.now(UTC) - row[1]).total_seconds() if row[1] else 0.0
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(age)

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        conn = await self._connection()
        status = await conn.execute(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1",
            datetime.now(UTC) - self.retention,
        )
        pruned = int(status.split()[-1]) if status and status.split()[-1].isdigit() else 0
        if pruned:
            log.info("outbox pruned", rows=pruned)


class _Marker:
    """Marks a pass's rows published as their sends are acknowledged, keeping each key's order: a row is marked only
    once every earlier row of its key in the pass was acknowledged, and never after one of them failed.

    What is acknowledged while an UPDATE runs goes in the next one, so a pass makes one UPDATE when Kafka acknowledges
    its batch at once, and a few when a slow partition (a leader failover) holds some sends back; the rows Kafka
    acknowledged are marked within a round trip of their acknowledgement instead of waiting for the slowest send.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.marked = 0
        self.per_topic: dict[str, int] = {}
        self._keys: dict[str, list[tuple[int, str, asyncio.Future]]] = {}  # each key's rows not yet marked, in order
        self._failed: set[str] = set()
        self._ready: list[int] = []
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="outbox-marks")
        self._closing = False

    def follow(self, row_id: int, key: str, topic: str, future: asyncio.Future) -> None:
        self._keys.setdefault(key, []).append((row_id, topic, future))
        future.add_done_callback(lambda _f: self._settle(key))

    def _settle(self, key: str) -> None:
        queue = self._keys.get(key, [])
        while queue and queue[0][2].done() and key not in self._failed:
            row_id, topic, future = queue[0]
            if future.cancelled() or future.exception() is not None:
                self._failed.add(key)  # it and every later row of its key stay pending: order is kept
                break
            queue.pop(0)
            self._ready.append(row_id)
            self.per_topic[topic] = self.per_topic.get(topic, 0) + 1
        if self._ready:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._ready:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            ready, self._ready = self._ready, []
            ids = ",".join(str(int(i)) for i in ready)  # bigints read from the table: written in as they are
            await self.conn.execute(f"UPDATE outbox SET published_at = now() WHERE id = ANY('{{{ids}}}'::bigint[])")
            self.marked += len(ready)

    def abandon(self) -> None:
        """A failed or cancelled pass: stop marking (what is not marked is sent again by the next pass)."""
        if not self._task.done():
            self._task.cancel()
        elif not self._task.cancelled():
            self._task.exception()  # retrieved, so asyncio does not warn that it never was

    async def close(self) -> None:
        """Once every send has settled: commit the last marks and stop; raises what an UPDATE raised."""
        self._closing = True
        self._wake.set()
        await self._task


def _asyncpg_dsn(db: Database) -> str:
    return libpq_url(db.engine.url.render_as_string(hide_password=False))


def headers_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (headers or [])}


__all__ = ["Outbox", "OutboxRelay", "outbox_tables", "shard_of", "headers_dict"]
