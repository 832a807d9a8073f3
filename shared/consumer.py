"""Consumers: one Kafka consumer group per `EventConsumer`, handlers by event type, inbox, retries, dead letters.

Delivery is at least once: offsets are committed only after a message was handled (or dead-lettered).
Records are handled a fetched batch at a time: one transaction claims every event's inbox row with one
statement, runs the handlers in key order (a stable sort, so each key keeps its order) and commits once, then
the offsets are committed once. If anything in the batch fails, the transaction rolls back and the batch is handled
again one record at a time, each in its own transaction: a failing record is retried with backoff a bounded
number of times, then goes to the group's dead-letter topic with the error in its headers, and the partition
moves on.

With tracing on, each event is handled in a "process" span that continues the trace its record's headers carry
(shared/tracing.py). FastStream's KafkaTelemetryMiddleware would see only the record FastStream delivers, not the
rest of the batch taken with `getmany`, and would make the batch's one transaction that record's alone.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage

from shared import metrics, tracing
from shared.config import Settings
from shared.events.envelope import Envelope, EventData
from shared.handlers import (
    BatchHandler,
    Handler,
    Handlers,
    RunHandler,
    TombstoneHandler,
    typed_data,
)
from shared.inbox import Inbox
from shared.kafka_security import kafka_client_options
from shared.logging import correlation_id_var, get_logger
from shared.topics import dead_letter_topic
from shared.uow import UnitsOfWork

log = get_logger(__name__)

BATCH_MAX_RECORDS = 200

# Headers on dead letters (and on replays).
H_ERROR_TYPE = "x-dlq-error-type"
H_ERROR_MESSAGE = "x-dlq-error-message"
H_ORIGINAL_TOPIC = "x-dlq-original-topic"
H_ORIGINAL_PARTITION = "x-dlq-original-partition"
H_ORIGINAL_OFFSET = "x-dlq-original-offset"
H_ORIGINAL_KEY = "x-dlq-original-key"
H_CONSUMER_GROUP = "x-dlq-consumer-group"
H_ATTEMPTS = "x-dlq-attempts"
H_FAILED_AT = "x-dlq-failed-at"
H_REPLAY_FOR_GROUP = "x-replay-for-group"


class RetryLater(Exception):
    """Something the handler needs has not arrived yet (e.g. a key from another topic): keep retrying,
    with backoff, for up to CONSUMER_RETRY_LATER_BUDGET_S before dead-lettering."""


# SQLSTATE classes of "the database cannot serve right now": connection exceptions (08), operator intervention
# (57P: shutting down, starting up, crash recovery), too many connections (53300).
_OUTAGE_SQLSTATES = ("08", "57P", "53300")


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database (or the network to it) is unavailable rather than that this event is bad.

    An outage is waited out, however long it lasts (the partition pauses, nothing is lost); only a failure of the
    event itself uses up the bounded retries and goes to the dead letters. Walks the exception's causes, since
    SQLAlchemy wraps asyncpg's errors and asyncpg wraps the socket's.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno is not None:
            return True
        if getattr(e, "connection_invalidated", False):
            return True
        sqlstate = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATES):
            return True
        todo.extend([e.__cause__, e.__context__, getattr(e, "orig", None)])
    return False


class EventConsumer:
    """A consumer group on Kafka: reads its topics and dispatches each event through its `Handlers` (one entry of
    the service's registry), with the inbox, retries and dead letters around it."""

    def __init__(self, handlers: Handlers, *, max_batch: int = BATCH_MAX_RECORDS) -> None:
        self.handlers = handlers
        self.group = handlers.group
        self.topics = handlers.topics
        self.description = handlers.description
        self.max_batch = max_batch
        self.service = ""
        self._inbox: Inbox | None = None
        self._uows: UnitsOfWork | None = None
        self._dlq: DeadLetterPublisher | None = None
        self._settings: Settings | None = None

    @classmethod
    def for_group(cls, group: str, topics: tuple[str, ...], description: str = "", *,
                  max_batch: int = BATCH_MAX_RECORDS) -> EventConsumer:
        """A consumer with a registry entry of its own (tests and one-off tools; services use their Registry)."""
        return cls(Handlers(group, topics, description), max_batch=max_batch)

    # Registering handlers: the same as on the consumer's `Handlers` (kept here so a consumer reads as one thing).
    def on(self, model: type[EventData]) -> Callable[[Handler], Handler]:
        return self.handlers.on(model)

    def on_run(self, model: type[EventData]) -> Callable[[RunHandler], RunHandler]:
        return self.handlers.on_run(model)

    def on_batch(self, fn: BatchHandler) -> BatchHandler:
        return self.handlers.on_batch(fn)

    def on_tombstone(self, fn: TombstoneHandler) -> TombstoneHandler:
        return self.handlers.on_tombstone(fn)

    def attach(self, broker: Any, inbox: Inbox, uows: UnitsOfWork, dlq: DeadLetterPublisher,
               settings: Settings) -> None:
        """Subscribe on a FastStream Kafka broker (anything with `.subscriber`)."""
        self._inbox, self._uows, self._dlq, self._settings = inbox, uows, dlq, settings
        self.service = settings.service_name
        # Every series exists from the start, at zero (a dashboard or alert sees 0, not "no data", before the
        # first event).
        for outcome in ("handled", "duplicate", "ignored", "dead_lettered"):
            metrics.EVENTS_CONSUMED.labels(self.service, self.group, outcome)
        metrics.EVENTS_RETRIED.labels(self.service, self.group)
        metrics.EVENTS_DEAD_LETTERED.labels(self.service, self.group)

        async def consume(msg: KafkaMessage) -> None:
            # FastStream waits for one record (getone: no added latency when idle); whatever the fetcher already
            # holds comes with it, up to max_batch, in each partition's order. The ack commits all their offsets.
            # (tests/delivery/test_faststream_contract.py pins the FastStream behaviour this relies on.)
            records = [msg.raw_message]
            kafka = getattr(msg, "consumer", None)
            if self.max_batch > 1 and kafka is not None and hasattr(kafka, "getmany"):
                if self.handlers.gather_s > 0:
                    await asyncio.sleep(self.handlers.gather_s)  # the fetcher goes on fetching meanwhile
                more = await kafka.getmany(timeout_ms=0, max_records=self.max_batch - 1)
                for partition_records in more.values():
                    records.extend(partition_records)
            await self.handle_batch(records)

        consume.__name__ = f"consume_{self.group.replace('.', '_')}"
        broker.subscriber(
            *self.topics,
            group_id=self.group,
            ack_policy=AckPolicy.ACK,
            auto_offset_reset="earliest",
            max_poll_records=self.max_batch,
            # A dead instance's partitions go to the others once its session times out (docs/scaling.md). Static
            # membership (group.instance.id) would keep them idle for the whole timeout even on a clean restart's
            # leave, and aiokafka has no cooperative rebalancing: a short session and frequent heartbeats it is.
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            title=f"{self.group}:consume",
            description=self.description
            or f"Consumer group {self.group}; handles {', '.join(sorted(self.handlers.handlers))}",
        )(consume)

    async def handle_batch(self, records: Sequence[Any]) -> None:
        """Handle a fetched batch (each partition's records in offset order) in one transaction; if that fails, handle
        its records one at a time (retries, dead letters). Returns when every record is handled or dead-lettered."""
        if not records:
            return
        if len(records) > 1:
            # By key (stable: a key's records keep their order; a key lives in one partition). Transactions of
            # any consumer then lock their subjects (parking's advisory locks, rows keyed by subject) in the same
            # order, so two batches touching the same subjects wait for each other instead of deadlocking.
            records = sorted(records, key=_record_key)
            try:
                outcomes = await self._handle_batch_once(records)
            except Exception as exc:
                log.info("batch failed; handling its records one at a time", consumer=self.group,
                         records=len(records), error=repr(exc))
            else:
                for outcome, n in outcomes.items():
                    if n:
                        metrics.EVENTS_CONSUMED.labels(self.service, self.group, outcome).inc(n)
                return
        for record in records:
            await self.handle_record(record)

    def _wanted(self, record: Any) -> bool:
        """False for a replay meant for another group's dead letters."""
        for k, v in record.headers or ():
            if k == H_REPLAY_FOR_GROUP:
                meant_for = v.decode(errors="replace")
                return not meant_for or meant_for == self.group
        return True

    async def _handle_batch_once(self, records: Sequence[Any]) -> dict[str, int]:
        assert self._inbox is not None and self._uows is not None
        handlers = self.handlers
        outcomes = {"handled": 0, "duplicate": 0, "ignored": 0}
        # (record, envelope, model, handler) in the records' order; a tombstone has no envelope.
        todo: list[tuple[Any, Envelope | None, Any, Any]] = []
        for record in records:
            if not self._wanted(record):
                continue
            if record.value is None:
                if handlers.tombstone_handler is None or record.key is None:
                    outcomes["ignored"] += 1
                else:
                    todo.append((record, None, None, None))
                continue
            envelope = Envelope.from_bytes(record.value)  # a malformed record fails the batch: one at a time
            entry = handlers.entry(envelope.type)
            if entry is None:
                outcomes["ignored"] += 1
                continue
            todo.append((record, envelope, *entry))
        if not todo:
            return outcomes
        envelopes = [env for _, env, _, _ in todo if env is not None]
        spans = tracing.processing(self.group, [(record, env) for record, env, _, _ in todo if env is not None])
        async with spans, self._uows.begin() as uow:
            claimed = await self._inbox.claim(uow.session, self.group, envelopes) if envelopes else set()
            pending: list[tuple[Envelope, Any, Any]] = []  # claimed events for the batch handler
            run: list[tuple[Envelope, Any]] = []  # consecutive claimed events of one type with a run handler
            run_subjects: set[str] = set()

            async def flush() -> None:
                if pending:
                    assert handlers.batch_handler is not None
                    await handlers.batch_handler(uow, list(pending))
                    pending.clear()
                if run:
                    await handlers.run_handlers[run[0][0].type](uow, list(run))
                    run.clear()
                    run_subjects.clear()

            for record, env, model, handler in todo:
                if env is None:
                    await flush()
                    assert handlers.tombstone_handler is not None
                    await handlers.tombstone_handler(uow, _key_text(record))
                    outcomes["handled"] += 1
                    continue
                if env.event_id not in claimed:
                    outcomes["duplicate"] += 1
                    continue
                claimed.discard(env.event_id)  # the same event twice in a batch: handled once
                data = typed_data(model, env)
                outcomes["handled"] += 1
                if handlers.batch_handler is not None:
                    pending.append((env, model, data))
                    continue
                if env.type in handlers.run_handlers:
                    subject = str(env.subject_id)
                    if run and (run[0][0].type != env.type or subject in run_subjects):
                        await flush()
                    run.append((env, data))
                    run_subjects.add(subject)
                    continue
                await flush()
                token = correlation_id_var.set(env.correlation_id)
                try:
                    with spans.current(env):
                        await handler(uow.caused_by(env), env, data)
                finally:
                    correlation_id_var.reset(token)
            await flush()
        return outcomes

    async def handle_record(self, record: Any) -> None:
        """Handle one Kafka record with bounded retries; dead-letter it when they run out. A database outage does
        not use them up: it is retried, with backoff, until the database answers again."""
        assert self._settings is not None and self._dlq is not None
        if not self._wanted(record):
            return  # a replay meant for another group's dead letters
        settings = self._settings
        attempts = 0
        delay = settings.consumer_retry_backoff_s
        started = time.monotonic()
        while True:
            attempts += 1
            try:
                outcome = await self._handle_once(record)
                metrics.EVENTS_CONSUMED.labels(self.service, self.group, outcome).inc()
                return
            except Exception as exc:
                waiting = is_outage(exc) or (isinstance(exc, RetryLater) and (
                    time.monotonic() - started < settings.consumer_retry_later_budget_s
                ))
                if attempts > settings.consumer_max_retries and not waiting:
                    log.error(
                        "event dead-lettered",
                        consumer=self.group,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        error=repr(exc),
                        attempts=attempts,
                    )
                    await self._dlq.publish(self.group, record, exc, attempts)
                    metrics.EVENTS_DEAD_LETTERED.labels(self.service, self.group).inc()
                    metrics.EVENTS_CONSUMED.labels(self.service, self.group, "dead_lettered").inc()
                    return
                metrics.EVENTS_RETRIED.labels(self.service, self.group).inc()
                log.warning(
                    "handler failed; retrying",
                    consumer=self.group,
                    error=repr(exc),
                    attempt=attempts,
                    retry_in_s=delay,
                    trace=traceback.format_exc(limit=3),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.consumer_retry_backoff_max_s)

    async def _handle_once(self, record: Any) -> str:
        assert self._inbox is not None and self._uows is not None
        handlers = self.handlers
        if record.value is None:
            if handlers.tombstone_handler is None or record.key is None:
                return "ignored"
            async with self._uows.begin() as uow:  # deleting is idempotent: no inbox row needed
                await handlers.tombstone_handler(uow, _key_text(record))
            return "handled"
        envelope = Envelope.from_bytes(record.value)
        entry = handlers.entry(envelope.type)
        if entry is None:
            return "ignored"
        model, handler = entry
        data = typed_data(model, envelope)
        token = correlation_id_var.set(envelope.correlation_id)
        try:
            async with (
                tracing.processing(self.group, [(record, envelope)]),
                self._uows.begin(correlation_id=envelope.correlation_id) as uow,
            ):
                if not await self._inbox.claim(uow.session, self.group, [envelope]):
                    return "duplicate"
                await handler(uow.caused_by(envelope), envelope, data)
        finally:
            correlation_id_var.reset(token)
        return "handled"


def _key_text(record: Any) -> str:
    return record.key.decode() if isinstance(record.key, bytes) else str(record.key)


def _record_key(record: Any) -> bytes:
    key = record.key
    if key is None:
        return b""
    return key if isinstance(key, bytes) else str(key).encode()


class DeadLetterPublisher:
    """Sends failed records to their group's dead-letter topic, with what went wrong in the headers."""

    def __init__(self, bootstrap_servers: str, client_id: str, kafka_options: Mapping[str, Any] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.kafka_options = kafka_options  # TLS and SASL; None: as the environment's settings say
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    enable_idempotence=True,
                    acks="all",
                    client_id=self.client_id,
                    **(kafka_client_options() if self.kafka_options is None else self.kafka_options),
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def publish(self, group: str, record: Any, exc: BaseException, attempts: int) -> None:
        producer = await self._ensure()
        original = [(k, v) for k, v in (record.headers or []) if not k.startswith("x-dlq-")]
        headers = original + [
            (H_ERROR_TYPE, type(exc).__name__.encode()),
            (H_ERROR_MESSAGE, str(exc)[:2000].encode()),
            (H_ORIGINAL_TOPIC, record.topic.encode()),
            (H_ORIGINAL_PARTITION, str(record.partition).encode()),
            (H_ORIGINAL_OFFSET, str(record.offset).encode()),
            (H_CONSUMER_GROUP, group.encode()),
            (H_ATTEMPTS, str(attempts).encode()),
            (H_FAILED_AT, datetime.now(UTC).isoformat().encode()),
        ]
        if record.key is not None:
            headers.append((H_ORIGINAL_KEY, record.key if isinstance(record.key, bytes) else str(record.key).encode()))
        await producer.send_and_wait(dead_letter_topic(group), value=record.value, key=record.key, headers=headers)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
