"""Fixtures for the whole suite: the real system, started (or reused) through the project's launcher."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from deploy.local import launcher
from tests.support.mail import MailCatcher


@pytest.fixture(scope="session")
def system() -> None:
    """Kafka, PostgreSQL, the SMTP catcher, the gateway and all services, up and ready."""
    launcher.ensure_up(services=True)


@pytest.fixture(scope="session")
def mail(system: None) -> MailCatcher:
    return MailCatcher(launcher.SMTP_CATCHER_URL)


@pytest.fixture
async def gateway(system: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=launcher.GATEWAY_URL, timeout=30, follow_redirects=False) as client:
        yield client


def asyncpg_dsn(service: str) -> str:
    return launcher.database_url(service).replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def membership_db(system: None) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn("membership"))
    yield conn
    await conn.close()


@pytest.fixture
async def notifications_db(system: None) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn("notifications"))
    yield conn
    await conn.close()
