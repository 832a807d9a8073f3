"""Consumers: one Kafka consumer group per `EventConsumer`, handlers by event type, inbox, retries, dead letters.

Delivery is at least once: offsets are committed only after a message was handled (or dead-lettered).
Records are handled a fetched batch at a time: one transaction claims every event's inbox row with one
statement, runs the handlers in key order (a stable sort, so each key keeps its order) and commits once, then
the offsets are committed once. If anything in the batch fails, the transaction rolls back and the batch is handled
again one record at a time, each in its own transaction: a failing record is retried with backoff a bounded
number of times, then goes to the group's dead-letter topic with the error in its headers, and the partition
moves on.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import annotations as broker_annotations
from faststream.kafka import fastapi as fastapi_integration
from faststream.kafka.fastapi import KafkaRouter
from sqlalchemy.ext.asyncio import AsyncSession

from shared import metrics
from shared.config import Settings
from shared.events.envelope import Envelope, EventData
from shared.inbox import Inbox
from shared.logging import correlation_id_var, get_logger
from shared.topics import dead_letter_topic

log = get_logger(__name__)

Handler = Callable[[Envelope, Any, AsyncSession], Awaitable[None]]
TombstoneHandler = Callable[[str, AsyncSession], Awaitable[None]]
# Applies a batch's claimed events, in order, in the batch's transaction: [(envelope, model, data), ...].
BatchHandler = Callable[[AsyncSession, list[tuple[Envelope, Any, Any]]], Awaitable[None]]
# Applies a run of claimed events of one type (each subject at most once), in order: [(envelope, data), ...].
RunHandler = Callable[[AsyncSession, list[tuple[Envelope, Any]]], Awaitable[None]]

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


class EventConsumer:
    """A consumer group: which events it handles and how; attached to a service's FastStream router."""

    def __init__(self, group: str, topics: tuple[str, ...], description: str = "", *,
                 max_batch: int = BATCH_MAX_RECORDS) -> None:
        self.group = group
        self.topics = topics
        self.description = description
        self.max_batch = max_batch
        self.handlers: dict[str, tuple[type[EventData], Handler]] = {}
        self.tombstone_handler: TombstoneHandler | None = None
        self.batch_handler: BatchHandler | None = None
        self.run_handlers: dict[str, RunHandler] = {}
        self.service = ""
        self._inbox: Inbox | None = None
        self._dlq: DeadLetterPublisher | None = None
        self._settings: Settings | None = None

    def on(self, model: type[EventData]) -> Callable[[Handler], Handler]:
        """Register the handler of one event type: `async def handler(envelope, data, session)`."""

        def register(fn: Handler) -> Handler:
            self.handlers[model.event_type] = (model, fn)
            return fn

        return register

    def on_tombstone(self, fn: TombstoneHandler) -> TombstoneHandler:
        """Register what a null value (a compacted topic's deletion marker) means: `async def f(key, session)`."""
        self.tombstone_handler = fn
        return fn

    def on_batch(self, fn: BatchHandler) -> BatchHandler:
        """Optional: apply a batch's claimed events at once (`async def f(session, [(envelope, model, data)])`),
        with the same effect as their handlers one by one in that order (the one-at-a-time fallback uses those)."""
        self.batch_handler = fn
        return fn

    def on_run(self, model: type[EventData]) -> Callable[[RunHandler], RunHandler]:
        """Optional, beside `on(model)`: apply consecutive events of this type in a batch at once
        (`async def f(session, [(envelope, data), ...])`, each subject at most once in a run), with the same
        effect as the type's handler on each in that order (the one-at-a-time fallback uses that handler)."""

        def register(fn: RunHandler) -> RunHandler:
            self.run_handlers[model.event_type] = fn
            return fn

        return register

    def attach(self, router: KafkaRouter | Any, inbox: Inbox, dlq: DeadLetterPublisher, settings: Settings) -> None:
        """Subscribe on a FastStream router or broker (anything with `.subscriber`)."""
        self._inbox, self._dlq, self._settings = inbox, dlq, settings
        self.service = settings.service_name
        # Every series exists from the start, at zero (a dashboard or alert sees 0, not "no data", before the
        # first event).
        for outcome in ("handled", "duplicate", "ignored", "dead_lettered"):
            metrics.EVENTS_CONSUMED.labels(self.service, self.group, outcome)
        metrics.EVENTS_RETRIED.labels(self.service, self.group)
        metrics.EVENTS_DEAD_LETTERED.labels(self.service, self.group)

        async def consume(msg: Any) -> None:
            # FastStream waits for one record (getone: no added latency when idle); whatever the fetcher already
            # holds comes with it, up to max_batch, in each partition's order. The ack commits all their offsets.
            records = [msg.raw_message]
            kafka = getattr(msg, "consumer", None)
            if self.max_batch > 1 and kafka is not None and hasattr(kafka, "getmany"):
                more = await kafka.getmany(timeout_ms=0, max_records=self.max_batch - 1)
                for partition_records in more.values():
                    records.extend(partition_records)
            await self.handle_batch(records)

        # FastStream injects the raw message through a context annotation, spelt differently for its
        # FastAPI integration and for a plain broker (tests use one).
        consume.__annotations__ = {
            "msg": fastapi_integration.KafkaMessage
            if isinstance(router, KafkaRouter)
            else broker_annotations.KafkaMessage,
            "return": None,
        }

        consume.__name__ = f"consume_{self.group.replace('.', '_')}"
        router.subscriber(
            *self.topics,
            group_id=self.group,
            ack_policy=AckPolicy.ACK,
            auto_offset_reset="earliest",
            max_poll_records=self.max_batch,
            title=f"{self.group}:consume",
            description=self.description
            or f"Consumer group {self.group}; handles {', '.join(sorted(self.handlers))}",
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
        assert self._inbox is not None
        outcomes = {"handled": 0, "duplicate": 0, "ignored": 0}
        # (record, envelope, model, handler) in the records' order; a tombstone has no envelope.
        todo: list[tuple[Any, Envelope | None, Any, Any]] = []
        for record in records:
            if not self._wanted(record):
                continue
            if record.value is None:
                if self.tombstone_handler is None or record.key is None:
                    outcomes["ignored"] += 1
                else:
                    todo.append((record, None, None, None))
                continue
            envelope = Envelope.from_bytes(record.value)  # a malformed record fails the batch: one at a time
            entry = self.handlers.get(envelope.type)
            if entry is None:
                outcomes["ignored"] += 1
                continue
            todo.append((record, envelope, *entry))
        if not todo:
            return outcomes
        envelopes = [env for _, env, _, _ in todo if env is not None]
        async with self._inbox.db.transaction() as session:
            claimed = await self._inbox.claim(session, self.group, envelopes) if envelopes else set()
            pending: list[tuple[Envelope, Any, Any]] = []  # claimed events for the batch handler
            run: list[tuple[Envelope, Any]] = []  # consecutive claimed events of one type with a run handler
            run_subjects: set[str] = set()

            async def flush() -> None:
                if pending:
                    assert self.batch_handler is not None
                    await self.batch_handler(session, list(pending))
                    pending.clear()
                if run:
                    await self.run_handlers[run[0][0].type](session, list(run))
                    run.clear()
                    run_subjects.clear()

            for record, env, model, handler in todo:
                if env is None:
                    await flush()
                    assert self.tombstone_handler is not None
                    await self.tombstone_handler(_key_text(record), session)
                    outcomes["handled"] += 1
                    continue
                if env.event_id not in claimed:
                    outcomes["duplicate"] += 1
                    continue
                claimed.discard(env.event_id)  # the same event twice in a batch: handled once
                data = typed_data(model, env)
                outcomes["handled"] += 1
                if self.batch_handler is not None:
                    pending.append((env, model, data))
                    continue
                if env.type in self.run_handlers:
                    subject = str(env.subject_id)
                    if run and (run[0][0].type != env.type or subject in run_subjects):
                        await flush()
                    run.append((env, data))
                    run_subjects.add(subject)
                    continue
                await flush()
                token = correlation_id_var.set(env.correlation_id)
                try:
                    await handler(env, data, session)
                finally:
                    correlation_id_var.reset(token)
            await flush()
        return outcomes

    async def handle_record(self, record: Any) -> None:
        """Handle one Kafka record with bounded retries; dead-letter it when they run out."""
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
                waiting = isinstance(exc, RetryLater) and (
                    time.monotonic() - started < settings.consumer_retry_later_budget_s
                )
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
        assert self._inbox is not None
        if record.value is None:
            if self.tombstone_handler is None or record.key is None:
                return "ignored"
            async with self._inbox.db.transaction() as session:  # deleting is idempotent: no inbox row needed
                await self.tombstone_handler(_key_text(record), session)
            return "handled"
        envelope = Envelope.from_bytes(record.value)
        entry = self.handlers.get(envelope.type)
        if entry is None:
            return "ignored"
        model, handler = entry
        data = typed_data(model, envelope)
        token = correlation_id_var.set(envelope.correlation_id)
        try:
            done = await self._inbox.process(
                self.group, envelope.event_id, envelope.type, lambda s: handler(envelope, data, s)
            )
        finally:
            correlation_id_var.reset(token)
        return "handled" if done else "duplicate"


def _key_text(record: Any) -> str:
    return record.key.decode() if isinstance(record.key, bytes) else str(record.key)


def typed_data(model: type[EventData], envelope: Envelope) -> Any:
    """The event's typed data: validated against the handler's model, or the catalog's for another version."""
    return model.model_validate(envelope.data) if envelope.version == model.event_version else envelope.payload()


def _record_key(record: Any) -> bytes:
    key = record.key
    if key is None:
        return b""
    return key if isinstance(key, bytes) else str(key).encode()


class DeadLetterPublisher:
    """Sends failed records to their group's dead-letter topic, with what went wrong in the headers."""

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
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
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def publish(self, group: str, record: Any, exc: BaseException, attempts: int) -> None:
        from datetime import UTC, datetime

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
