"""Fixtures for the whole suite: the real system, started (or reused) through the project's launcher."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser

from deploy.local import launcher
from tests.support.browser import chromium
from tests.support.mail import MailCatcher

# Which infrastructure the suite runs against (docs/operations.md, "Testing"):
#   launcher (default): the project's own launcher, no Docker needed; this is what CI runs.
#   docker: deploy/docker-compose.yml through testcontainers, on a machine with a Docker engine. The same
#           ports are published, so every test reaches the system the same way; tests marked `fault` drive
#           the launcher's processes (stop Kafka, SIGKILL a service) and are skipped there.
TEST_INFRA = os.environ.get("GROUNDSWELL_TEST_INFRA", "launcher")
# The suite is a development machine: Settings(...) built in-process may use a weak or no SECRET_KEY.
os.environ.setdefault("GROUNDSWELL_DEV", "1")
REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TEST_INFRA == "docker":
        skip = pytest.mark.skip(reason="fault injection drives the local launcher's processes")
        for item in items:
            if "fault" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def system() -> Iterator[None]:
    """Kafka, PostgreSQL, the SMTP catcher, the gateway and all services, up and ready."""
    if TEST_INFRA == "launcher":
        launcher.ensure_up(services=True)
        yield
        return
    if TEST_INFRA != "docker":
        raise pytest.UsageError(f"GROUNDSWELL_TEST_INFRA must be launcher or docker, not {TEST_INFRA!r}")
    from testcontainers.compose import DockerCompose

    env_file = REPO / ".run" / "compose.env"
    env_file.parent.mkdir(exist_ok=True)
    env_file.write_text(f"SECRET_KEY={launcher.secret_key()}\n")  # the key the tests sign tokens with
    compose = DockerCompose(
        str(REPO / "deploy"), compose_file_name="docker-compose.yml", env_file=str(env_file), wait=True, build=True
    )
    compose.start()
    try:
        if not launcher.wait_http(f"{launcher.GATEWAY_URL}/join", 300):
            raise RuntimeError("the docker-compose system did not answer on the gateway within 300 s")
        yield
    finally:
        compose.stop()


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
async def campaigns_db(system: None) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn("campaigns"))
    yield conn
    await conn.close()


@pytest.fixture
async def events_db(system: None) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn("events"))
    yield conn
    await conn.close()


@pytest.fixture
async def notifications_db(system: None) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn("notifications"))
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for a module's tests; each test opens its own context in it
    (tests/support/browser.py, own_context)."""
    async with chromium() as launched:
        yield launched
