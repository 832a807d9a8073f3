"""Fixtures for delivery-guarantee tests: a scratch database and scratch topics on the real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import MetaData

from deploy.local import launcher
from shared.db import Database
from shared.outbox import NOTIFY_TRIGGER_SQL
from shared.runtime import DeliveryTables
from tests.conftest import asyncpg_dsn


@pytest.fixture
async def scratch_db(system: None) -> AsyncIterator[tuple[Database, DeliveryTables]]:
    """A fresh database with outbox and inbox tables (create_all is fine in tests), dropped afterwards."""
    name = f"gs_scratch_{uuid.uuid4().hex[:10]}"
    admin_dsn = asyncpg_dsn("membership")
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = launcher.database_url("membership").rsplit("/", 1)[0] + f"/{name}"
    db = Database(url, pool_size=5)
    metadata = MetaData()
    tables = DeliveryTables(metadata)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        for statement in NOTIFY_TRIGGER_SQL:
            await conn.exec_driver_sql(statement)
    try:
        yield db, tables
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def scratch_topics(system: None) -> AsyncIterator[callable]:
    """Make topics that exist only for one test; they are deleted afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await admin.start()
    made: list[str] = []

    async def make(*names: str, partitions: int = 3) -> None:
        await admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
        made.extend(names)

    try:
        yield make
    finally:
        if made:
            try:
                await admin.delete_topics(made)
            except Exception:
                pass
        await admin.close()
