"""Database plumbing: one async engine per service, sessions, and a unit of work that also collects events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, MetaData, any_, event, exc, literal
from sqlalchemy.dialects.postgresql import ARRAY
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


# A connection back in the pool for less than this is taken again without a ping (see `ping_idle_connections`).
PING_IF_IDLE_FOR_S = 2.0


def ping_idle_connections(engine: AsyncEngine, idle_s: float = PING_IF_IDLE_FOR_S) -> None:
    """Let a checkout survive a PostgreSQL restart, as `pool_pre_ping` does, without its cost on busy connections:
    a connection whose socket has closed is replaced at once, and one idle for `idle_s` or more is pinged first
    (the asyncpg dialect's ping is BEGIN, a statement and ROLLBACK: three round trips, at every checkout of every
    organiser request, two or three a page). One used moments ago answered moments ago; if PostgreSQL went away since,
    the statement fails, SQLAlchemy sees a disconnect and replaces every connection of the pool."""

    @event.listens_for(engine.sync_engine, "checkin")
    def returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise exc.DisconnectionError("the connection was closed")
        returned_at = record.info.get("returned_at")
        if returned_at is not None and time.monotonic() - returned_at < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # the pool replaces it (and tries up to three times)
            raise exc.DisconnectionError(repr(error)) from error


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    # hide_parameters: an error that reaches a log names the statement, never the personal data bound to it.
    engine = connect_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
    )
    ping_idle_connections(engine)
    return engine


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


def any_of(column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """SQL `column = ANY($1)` with the values bound as one array: the same statement whatever their number, so it
    is compiled and prepared once, where `column.in_(values)` writes a placeholder per value into a new statement
    (hundreds for a page of members) and compiles it at each call."""
    return column == any_(literal(list(values), ARRAY(column.type)))
