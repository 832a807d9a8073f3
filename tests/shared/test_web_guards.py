"""The guards every service's app carries (shared/web.py), on a bare app of their own: a request that fails
answers 500 with `Connection: close` (so the gateway never reuses that connection), and what answers first."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.web import CloseAfterFailure, NoStore


async def fails(request: Request) -> PlainTextResponse:
    raise RuntimeError("a bug")


async def works(request: Request) -> PlainTextResponse:
    return PlainTextResponse("fine")


def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/fails", fails), Route("/works", works)])
    app.add_middleware(CloseAfterFailure)
    app.add_middleware(NoStore)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://service")


async def test_a_failure_answers_500_and_asks_for_the_connection_to_be_closed() -> None:
    async with client() as c:
        failed = await c.get("/fails")
        assert failed.status_code == 500 and failed.headers["connection"] == "close"
        assert failed.text == "Internal Server Error"  # nothing of the error reaches the caller
        ordinary = await c.get("/works")
        assert ordinary.status_code == 200 and "connection" not in ordinary.headers
        assert ordinary.headers["cache-control"] == "no-store"
