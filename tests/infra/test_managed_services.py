"""Managed Kafka and PostgreSQL: every client the project makes connects over TLS with the credentials and the
certificate authority it is given, and refuses at once, saying why, when they are wrong (issue #19).

One broker (SASL_SSL with a PLAIN and a SCRAM-SHA-512 user, SSL with client certificates) and one PostgreSQL
server that refuses every TCP connection without TLS are started for this module, with certificates made here
(tests/support/tls_servers.py, tests/support/certs.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from faststream.kafka import KafkaMessage
from sqlalchemy import text

from deploy.local.config import HOST, REPO_ROOT
from deploy.local.processes import stop_process
from services.events.db import delivery
from shared.config import Settings
from shared.database_url import libpq_url
from shared.db import Database
from shared.events.catalog import MemberConfirmed
from shared.events.envelope import Envelope
from shared.kafka_security import kafka_client_options
from shared.migrations import upgrade
from shared.outbox import Outbox, OutboxRelay
from shared.runtime import build_broker
from shared.topics import all_topics
from tests.support.certs import Pki, make_pki
from tests.support.tls_servers import (
    KAFKA_NAME,
    KAFKA_SASL_SSL_PORT,
    KAFKA_SSL_PORT,
    PLAIN_USER,
    POSTGRES_NAME,
    SCRAM_USER,
    start_tls_kafka,
    start_tls_postgres,
    tls_database_url,
)

SASL_SSL = f"{HOST}:{KAFKA_SASL_SSL_PORT}"
SSL = f"{HOST}:{KAFKA_SSL_PORT}"
EVENTS_DB = "groundswell_events_tls"
# Never waited for: a guard that turns a hang into a failure (a wrong setting must fail at once, not hang).
HANG = 90.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_servers(pki: Pki) -> Iterator[None]:
    """The TLS broker and PostgreSQL server, started side by side, stopped (their data thrown away) afterwards."""
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(start_tls_kafka, pki), pool.submit(start_tls_postgres, pki)]
    try:
        for future in started:
            future.result()
        yield
    finally:
        stop_process(KAFKA_NAME, signal.SIGKILL)
        stop_process(POSTGRES_NAME)


def kafka_settings(bootstrap: str, **security: Any) -> Settings:
    return Settings(groundswell_dev=True, service_name="tls-test", kafka_bootstrap_servers=bootstrap, **security)


def plain(pki: Pki, password: str = PLAIN_USER.password, ca: Path | None = None) -> Settings:
    return kafka_settings(SASL_SSL, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
                          kafka_sasl_username=PLAIN_USER.name, kafka_sasl_password=password,
                          kafka_ssl_ca_file=str(ca or pki.ca))  # fmt: skip


def scram(pki: Pki, password: str = SCRAM_USER.password) -> Settings:
    return kafka_settings(SASL_SSL, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                          kafka_sasl_username=SCRAM_USER.name, kafka_sasl_password=password,
                          kafka_ssl_ca_file=str(pki.ca))  # fmt: skip


def mutual_tls(pki: Pki, ca: Path | None = None) -> Settings:
    return kafka_settings(SSL, kafka_security_protocol="SSL", kafka_ssl_ca_file=str(ca or pki.ca),
                          kafka_ssl_cert_file=str(pki.client_cert), kafka_ssl_key_file=str(pki.client_key))  # fmt: skip


def topics_command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m shared.topics create` as an operator runs it, configured by the environment alone."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run(
        [sys.executable, "-m", "shared.topics", "create"], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**base, "GROUNDSWELL_DEV": "1", "KAFKA_BOOTSTRAP_SERVERS": SASL_SSL, **env}, timeout=HANG,
    )  # fmt: skip


async def topic_names(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_topics_are_created_over_sasl_ssl_with_a_scram_user(tls_servers: None, pki: Pki) -> None:
    result = topics_command({
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": SCRAM_USER.name, "KAFKA_SASL_PASSWORD": SCRAM_USER.password,
        "KAFKA_SSL_CA_FILE": str(pki.ca), "KAFKA_REPLICATION_FACTOR": "1", "KAFKA_PARTITIONS": "1",
    })  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {t.name for t in all_topics()} <= asyncio.run(topic_names(plain(pki)))


def test_topic_creation_refuses_a_broker_its_ca_did_not_sign_and_says_so(tls_servers: None, pki: Pki) -> None:
    result = topics_command({
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": PLAIN_USER.name,
        "KAFKA_SASL_PASSWORD": PLAIN_USER.password, "KAFKA_SSL_CA_FILE": str(pki.untrusted_ca),
    })  # fmt: skip
    assert result.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert f"Kafka at {SASL_SSL} refused or could not be reached over SASL_SSL" in result.stderr


@pytest.fixture(scope="module")
def events_db_url(tls_servers: None, pki: Pki) -> str:
    """The events service's database on the TLS server, migrated by Alembic over TLS verified against the CA
    (the server refuses any TCP connection without TLS)."""

    async def recreate() -> None:
        conn = await asyncpg.connect(libpq_url(tls_database_url(pki.ca)))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{EVENTS_DB}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{EVENTS_DB}"')
        finally:
            await conn.close()

    asyncio.run(recreate())
    url = tls_database_url(pki.ca, database=EVENTS_DB)
    upgrade(REPO_ROOT / "services" / "events", url)
    return url


@pytest.fixture
async def events_db(events_db_url: str) -> AsyncIterator[Database]:
    db = Database(events_db_url, pool_size=2)
    try:
        yield db
    finally:
        await db.dispose()


async def test_the_relay_publishes_over_sasl_ssl_and_the_services_broker_consumes_over_mutual_tls(
    events_db: Database, pki: Pki
) -> None:
    topic = f"tls.relay.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=SASL_SSL, **kafka_client_options(scram(pki)))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    envelope = Envelope.wrap(MemberConfirmed(member_id=str(uuid.uuid4()), confirmed_at="2026-12-07T04:00:00Z"))
    async with events_db.transaction() as session:
        await Outbox(delivery.outbox).add(session, envelope, topic=topic)

    broker = build_broker(mutual_tls(pki), "TLS test consumer")
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    @broker.subscriber(topic, group_id=f"tls-test-{topic}", auto_offset_reset="earliest")
    async def handle(message: KafkaMessage) -> None:
        if not received.done():
            received.set_result(message.body)

    relay = OutboxRelay(events_db, SASL_SSL, "tls-test", poll_interval_s=0.2,
                        kafka_options=kafka_client_options(plain(pki)))  # fmt: skip
    await broker.start()
    await relay.start()
    try:
        body = await asyncio.wait_for(received, HANG)
        await asyncio.wait_for(marked(relay), HANG)
    finally:
        await relay.stop()
        await broker.stop()

    assert Envelope.from_bytes(body).event_id == envelope.event_id
    async with events_db.transaction() as session:
        pending = await session.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
        assert pending.scalar() == 0


async def marked(relay: OutboxRelay) -> None:
    """Until the relay has marked what Kafka acknowledged (its marks commit a moment after the send)."""
    while relay.published_total < 1:
        await asyncio.sleep(0.1)


WRONG = {
    "PLAIN, wrong password": (lambda pki: plain(pki, password="not-the-password"), "Invalid username or password"),
    "SCRAM-SHA-512, wrong password": (lambda pki: scram(pki, password="not-the-password"), "invalid credentials"),
    "SASL_SSL, untrusted CA": (lambda pki: plain(pki, ca=pki.untrusted_ca), "CERTIFICATE_VERIFY_FAILED"),
    "SSL, untrusted CA": (lambda pki: mutual_tls(pki, ca=pki.untrusted_ca), "CERTIFICATE_VERIFY_FAILED"),
}


@pytest.mark.parametrize("case", list(WRONG))
async def test_the_services_broker_refuses_to_start_with_wrong_credentials_or_ca_and_says_why(
    tls_servers: None, pki: Pki, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings, reason = WRONG[case]
    broker = build_broker(settings(pki), "TLS test")
    try:
        with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(broker.start(), HANG)
    finally:
        await broker.stop()
    assert reason in caplog.text


async def test_the_services_engine_connects_with_verify_full_and_the_servers_ca(events_db: Database) -> None:
    async with events_db.engine.connect() as conn:
        tls = await conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
        assert tls.scalar() is True
    assert await events_db.ping()


async def test_the_services_engine_and_relay_connections_refuse_a_server_their_ca_did_not_sign(
    events_db_url: str, pki: Pki
) -> None:
    url = events_db_url.replace(str(pki.ca), str(pki.untrusted_ca))
    db = Database(url, pool_size=1)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with db.engine.connect():
                pass
        assert not await db.ping()  # readiness says so
    finally:
        await db.dispose()
    with pytest.raises(ssl.SSLCertVerificationError):  # the relay's own connections (LISTEN, marks)
        await asyncpg.connect(Settings(groundswell_dev=True, database_url=url).asyncpg_dsn)
