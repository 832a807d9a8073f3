"""What every service's composition root assembles: database, outbox relay, consumers, Kafka router, web app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy import MetaData, Table

from shared import metrics, tracing
from shared.auth import SESSION_COOKIE
from shared.client_address import TrustedProxies, parse_networks
from shared.config import Settings, get_settings
from shared.consumer import DeadLetterPublisher, EventConsumer
from shared.db import Database
from shared.events.envelope import Envelope
from shared.handlers import Registry
from shared.inbox import Inbox, inbox_table
from shared.kafka_security import kafka_client_options, kafka_security
from shared.logging import configure_logging, get_logger
from shared.openapi import complete_openapi
from shared.outbox import Outbox, OutboxRelay, outbox_tables
from shared.revocations import Revocations, revocations_table
from shared.uow import UnitsOfWork
from shared.web import (
    CloseAfterFailure,
    NoStore,
    RefuseCrossSiteForms,
    RejectControlCharacters,
    RequestIdMiddleware,
    add_failing_route,
    add_operational_routes,
)

log = get_logger(__name__)

# How long a stopping service waits for its background loops to finish the work in hand (an email in the middle
# of its mail transaction: at most the relay's 30 s reply timeout, usually milliseconds), well inside the
# launcher's and Kubernetes' 30 s before SIGKILL.
BACKGROUND_STOP_GRACE_S = 15.0


class DeliveryTables:
    """The outbox, inbox and revocation tables, added to a service's own metadata."""

    def __init__(self, metadata: MetaData) -> None:
        self.outbox, self.outbox_shard = outbox_tables(metadata)
        self.inbox: Table = inbox_table(metadata)
        self.revocations: Table = revocations_table(metadata)


def bootstrap_list(servers: str) -> list[str]:
    """`KAFKA_BOOTSTRAP_SERVERS` as a list: FastStream takes a single string for one server only."""
    return [s.strip() for s in servers.split(",") if s.strip()]


def build_broker(settings: Settings, description: str) -> KafkaBroker:
    """The FastStream broker a service consumes with: every bootstrap server, TLS and SASL as configured."""
    return KafkaBroker(
        bootstrap_list(settings.kafka_bootstrap_servers),
        client_id=settings.service_instance,
        description=description,
        security=kafka_security(settings),
        # FastStream's "Received"/"Processed" lines for every batch are debug output here: at INFO they
        # cost more CPU than handling a small batch. Errors are still logged (shared/consumer.py).
        log_level=logging.DEBUG,
    )


class ServiceRuntime:
    """One process of a service: its settings, database, units of work (outbox), inbox, relay and Kafka broker.

    The FastStream broker runs inside FastAPI's lifespan (started after the relay, stopped before it): one process
    serves pages and consumes events without FastStream's deprecated FastAPI integration
    (docs/decisions/0004-faststream-broker-in-the-fastapi-lifespan.md).
    """

    def __init__(
        self, name: str, tables: DeliveryTables, settings: Settings | None = None, *, relay_gather_s: float = 0.0
    ) -> None:
        self.settings = settings or get_settings()
        self.name = name
        self.db = Database(self.settings.database_url, self.settings.database_pool_size)
        self.outbox = Outbox(tables.outbox)
        self.uows = UnitsOfWork(self.db, self.outbox)
        self.inbox = Inbox(self.db, tables.inbox)
        self.revocations = Revocations(self.db, tables.revocations)
        self.broker = build_broker(self.settings, f"Groundswell {name} service")
        self.kafka_options = kafka_client_options(self.settings)
        self.relay = OutboxRelay(
            self.db,
            self.settings.kafka_bootstrap_servers,
            name,
            batch_size=self.settings.outbox_batch_size,
            poll_interval_s=self.settings.outbox_poll_interval_s,
            retention=timedelta(hours=self.settings.outbox_retention_hours),
            gather_s=relay_gather_s,
            kafka_options=self.kafka_options,
        )
        self.dlq = DeadLetterPublisher(
            self.settings.kafka_bootstrap_servers, f"{self.settings.service_instance}-dlq", self.kafka_options
        )
        self.consumers: list[EventConsumer] = []
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._stops: dict[int, Callable[[], None]] = {}  # by index in `background`: loops asked to finish first
        self._tasks: list[asyncio.Task] = []
        self.add_background(self._prune_revocations)

    async def _prune_revocations(self) -> None:
        while True:
            try:
                await self.revocations.prune()
            except Exception as exc:  # the next pass tries again
                log.warning("pruning ended sessions from the revocation record failed", error=repr(exc))
            await asyncio.sleep(3600)

    def document_publisher(self, topic: str, description: str) -> None:
        """Declare what this service publishes on `topic`, for the AsyncAPI document (the relay does the sending)."""
        self.broker.publisher(topic, title=f"{topic}:publish", description=description, schema=Envelope)

    def add_consumer(self, consumer: EventConsumer, inbox: Inbox | None = None) -> None:
        """Subscribe one consumer group (with the service's inbox unless it keeps its own)."""
        consumer.attach(self.broker, inbox or self.inbox, self.uows, self.dlq, self.settings)
        self.consumers.append(consumer)

    def add_registry(self, registry: Registry, **max_batch: int) -> list[EventConsumer]:
        """A consumer group for each entry of the service's handler registry (`max_batch` by group name)."""
        consumers = []
        for name, handlers in registry.groups.items():
            kwargs = {"max_batch": max_batch[name]} if name in max_batch else {}
            consumer = EventConsumer(handlers, **kwargs)
            self.add_consumer(consumer)
            consumers.append(consumer)
        return consumers

    def add_background(
        self, loop: Callable[[], Coroutine[Any, Any, None]], *, stop: Callable[[], None] | None = None
    ) -> None:
        """A long-running coroutine started with the service and cancelled when it stops.

        A loop whose work must not be cut in the middle (an email the relay may have accepted, and its record)
        gives `stop`: when the service stops, it is called first and the loop given `BACKGROUND_STOP_GRACE_S`
        to finish what it holds and return, before it is cancelled."""
        if stop is not None:
            self._stops[len(self.background)] = stop
        self.background.append(loop)

    async def _stop_background(self) -> None:
        """Ask the loops that can finish their work to do so, give them a moment, then cancel every loop."""
        finishing = [self._tasks[i] for i in self._stops if i < len(self._tasks)]
        for stop in self._stops.values():
            stop()
        if finishing:
            _, unfinished = await asyncio.wait(finishing, timeout=BACKGROUND_STOP_GRACE_S)
            if unfinished:
                log.warning("background work still running when the service stopped; cancelled",
                            loops=len(unfinished))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def measure_consumer_lag(self, interval_s: float = 15.0) -> None:
        """Keep `groundswell_consumer_lag` current: end offset minus committed offset, per group and partition."""
        bootstrap = self.settings.kafka_bootstrap_servers
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **self.kafka_options)
            probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **self.kafka_options)
            try:
                await admin.start()
                await probe.start()
                while True:
                    for consumer in self.consumers:
                        committed = await admin.list_consumer_group_offsets(consumer.group)
                        if not committed:
                            continue
                        ends = await probe.end_offsets(list(committed))
                        for tp, meta in committed.items():
                            lag = max(0, ends.get(tp, 0) - max(meta.offset, 0))
                            metrics.CONSUMER_LAG.labels(self.name, consumer.group, tp.topic, str(tp.partition)).set(lag)
                    await asyncio.sleep(interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("measuring consumer lag failed; will retry", error=repr(exc))
                await asyncio.sleep(interval_s)
            finally:
                with contextlib.suppress(Exception):
                    await probe.stop()
                with contextlib.suppress(Exception):
                    await admin.close()

    async def readiness(self) -> dict[str, bool]:
        db_ok = await self.db.ping()
        try:
            kafka_ok = bool(await self.broker.ping(timeout=2.0))
        except Exception:
            kafka_ok = False
        return {"database": db_ok, "kafka": kafka_ok}

    def build_app(self, title: str, routers: Sequence[APIRouter] = (), **fastapi_kwargs: Any) -> FastAPI:
        configure_logging(self.settings.service_instance, self.settings.log_level, self.settings.log_json)
        tracing.configure_tracing(self.name, self.settings.service_instance)  # only if OTEL_* ask for it

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            await self.relay.start()
            loops = [*self.background, self.measure_consumer_lag] if self.consumers else self.background
            self._tasks = [asyncio.create_task(loop()) for loop in loops]
            await self.broker.start()
            try:
                log.info("service started", port=self.settings.http_port)
                yield
            finally:
                await self.broker.stop()
            await self._stop_background()
            await self.relay.stop()
            await self.dlq.stop()
            await self.db.dispose()

        app = FastAPI(title=title, lifespan=lifespan, **fastapi_kwargs)
        app.state.runtime = self
        app.state.revocations = self.revocations  # shared/auth.py checks every session and API key against it
        app.add_middleware(CloseAfterFailure)
        app.add_middleware(RefuseCrossSiteForms, public_base_url=self.settings.public_base_url,
                           session_cookie=SESSION_COOKIE)
        app.add_middleware(NoStore)
        app.add_middleware(RejectControlCharacters)
        app.add_middleware(TrustedProxies, trusted=parse_networks(self.settings.trusted_proxies))
        app.add_middleware(RequestIdMiddleware, service=self.name)  # the last added runs first
        tracing.instrument_app(app)
        add_operational_routes(app, self.name, self.readiness)
        if self.settings.groundswell_dev and self.settings.groundswell_test_failures:
            add_failing_route(app)
        for r in routers:
            app.include_router(r)
        complete_openapi(app)
        return app
