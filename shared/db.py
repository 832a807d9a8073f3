"""Database plumbing: one async engine per service, sessions, and a unit of work that also collects events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.database_url import libpq_url

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def connect_engine(url: str, **options: Any) -> AsyncEngine:
    """An engine whose connections asyncpg opens from the whole DATABASE_URL, as the outbox relay's own connections
    are opened: libpq's `sslmode`, `sslrootcert`, `sslcert` … mean what they mean to libpq (shared/database_url.py).
    Left to SQLAlchemy, each URL parameter would become a keyword of asyncpg.connect, which has no `sslmode`."""
    dsn = libpq_url(url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return create_async_engine(url, async_creator=connect, **options)


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    # pool_pre_ping lets every checkout survive a PostgreSQL restart: a dead connection is replaced.
    # hide_parameters: an error that reaches a log names the statement, never the personal data bound to it.
    return connect_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


class Database:
    """An engine and its session factory, owned by a service's composition root."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.engine = make_engine(url, pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends normally, rolled back on any exception."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> bool:
        from sqlalchemy import text

        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()
