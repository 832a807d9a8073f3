"""Running one service in this process for its tests: a free port, a migrated database of the tests' own on
the launcher's PostgreSQL, and the service's app behind real HTTP (uvicorn)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn

from deploy.local import launcher
from shared import topics
from shared.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL of a database as asyncpg takes it."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def fresh_test_database(
    service: str, test_db: str, service_dir: Path, *, extra_topics: tuple[topics.TopicSpec, ...] = ()
) -> str:
    """Kafka and PostgreSQL up, every topic (and `extra_topics`) created, and `test_db` dropped, created anew
    beside `service`'s database and migrated with the service's real migrations; its URL."""
    launcher.ensure_up(services=False)
    url = launcher.database_url(service).rsplit("/", 1)[0] + f"/{test_db}"
    maintenance = asyncpg_dsn(launcher.database_url(service)).rsplit("/", 1)[0] + "/postgres"

    async def prepare() -> None:
        conn = await asyncpg.connect(maintenance)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{test_db}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{test_db}"')
        finally:
            await conn.close()
        await topics.create_topics(launcher.KAFKA_BOOTSTRAP, extra=extra_topics)

    asyncio.run(prepare())
    from shared.migrations import upgrade

    upgrade(service_dir, url)  # the real migrations, as `python -m services.<service> migrate` runs them
    return url


class InProcessServer:
    """A service's app in this process on a real port. Subclasses say how the app is made (`create_app`)
    and may prepare for it before it serves (`before_serve`); `uvicorn_options` add to uvicorn's config."""

    name = "the service"
    uvicorn_options: dict[str, Any] = {}

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    def create_app(self) -> Any:
        raise NotImplementedError

    async def before_serve(self) -> None:
        """Called with `self.app` made, before uvicorn starts it."""

    async def start(self) -> None:
        self.app = self.create_app()
        await self.before_serve()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="on", timeout_graceful_shutdown=5, **self.uvicorn_options)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 60
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"{self.name} stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start within 60 s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=30)
        self._server = self._task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def poll(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Wait until `await check()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def until_blocked_by(conn: asyncpg.Connection, holder_pid: int, timeout: float = 30.0) -> None:
    """Wait until a PostgreSQL session waits for a lock the session `holder_pid` holds (pg_blocking_pids): the proof
    that a transaction started meanwhile is waiting for the holder, seen as soon as it waits. `conn` only looks."""
    await poll(lambda: conn.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", holder_pid),
        timeout, 0.05)
