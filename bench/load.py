"""An asyncio HTTP/1.1 load generator on raw sockets: keep-alive connections, closed or open loop.

httpx costs about a millisecond of CPU per request, which on a two-core machine is taken from the server
being measured; this client does only what a benchmark needs (build the request bytes, read the status line,
headers and a Content-Length or chunked body), so the same client drives the system and its baselines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

RequestFactory = Callable[[int], tuple[str, str, dict[str, str], bytes]]  # i -> (method, path, headers, body)


class HttpConnection:
    """One keep-alive connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.writer is None:
                await self._open()
            assert self.reader is not None and self.writer is not None
            head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            try:
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body


@dataclass
class LoadResult:
    """Per request: when it was sent and answered (time.time()), its status; and the run's wall time."""

    started: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.statuses)

    def ok(self, *codes: int) -> int:
        return sum(1 for s in self.statuses if s in codes)

    def rate(self, *codes: int) -> float:
        return self.ok(*codes) / self.seconds if self.seconds else 0.0

    def latencies_ms(self) -> list[float]:
        return [(a - s) * 1000 for s, a in zip(self.started, self.answered, strict=True)]


def _split(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def closed_loop(base_url: str, make: RequestFactory, *, concurrency: int, seconds: float,
                      warmup_s: float = 2.0) -> LoadResult:
    """`concurrency` clients, each sending its next request as soon as the last is answered, for `seconds`
    (after `warmup_s` whose requests are not counted)."""
    host, port = _split(base_url)
    result = LoadResult()
    counter = iter(range(10**9))
    t0 = time.monotonic()
    measure_from, stop_at = t0 + warmup_s, t0 + warmup_s + seconds

    async def client() -> None:
        conn = HttpConnection(host, port)
        try:
            while (now := time.monotonic()) < stop_at:
                i = next(counter)
                method, path, headers, body = make(i)
                sent = time.time()
                try:
                    status, _ = await conn.request(method, path, headers, body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    await asyncio.sleep(0.05)
                    continue
                if now >= measure_from:
                    result.started.append(sent)
                    result.answered.append(time.time())
                    result.statuses.append(status)
                    result.indexes.append(i)
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = seconds
    return result


async def open_loop(base_url: str, make: RequestFactory, *, rate: float, seconds: float,
                    max_in_flight: int = 512) -> LoadResult:
    """Requests started at a steady `rate` per second for `seconds`, whatever the answers' pace (up to
    `max_in_flight` at once, on a pool of keep-alive connections), as people arriving would."""
    host, port = _split(base_url)
    result = LoadResult()
    idle: list[HttpConnection] = []
    gate = asyncio.Semaphore(max_in_flight)
    tasks: list[asyncio.Task] = []
    total = int(rate * seconds)
    t0 = time.monotonic()

    async def one(i: int) -> None:
        async with gate:
            conn = idle.pop() if idle else HttpConnection(host, port)
            method, path, headers, body = make(i)
            sent = time.time()
            try:
                status, _ = await conn.request(method, path, headers, body)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                await conn.close()
                return
            result.started.append(sent)
            result.answered.append(time.time())
            result.statuses.append(status)
            result.indexes.append(i)
            idle.append(conn)

    for i in range(total):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - t0
    for conn in idle:
        await conn.close()
    return result


def form_body(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()
