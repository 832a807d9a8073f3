"""A failure never spills onto other requests (#18): the gateway keeps connections to the services alive, and
when a service drops them (it crashed and restarted, or it closed idle ones) the next requests are answered
normally instead of being handed a dead connection (the gateway's 503)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from deploy.local import launcher

UVICORN_KEEP_ALIVE_S = 5.0  # how long a service keeps an idle connection open


async def _burst(gateway: httpx.AsyncClient, n: int = 24) -> list[int]:
    """Ordinary requests at once, so the gateway uses (and keeps) several connections to events."""
    responses = await asyncio.gather(*(gateway.get("/events") for _ in range(n)))
    return [r.status_code for r in responses]


async def test_requests_right_after_a_service_closed_its_idle_connections_are_answered(
    gateway: httpx.AsyncClient,
) -> None:
    assert set(await _burst(gateway)) == {200}
    await asyncio.sleep(UVICORN_KEEP_ALIVE_S + 0.2)  # the service has now closed every idle connection
    assert set(await _burst(gateway)) == {200}


async def test_requests_right_after_one_that_failed_in_a_service_are_answered(
    gateway: httpx.AsyncClient, membership_key: dict[str, str]
) -> None:
    for _ in range(3):
        # The development stack's route that fails on purpose (no client's input makes a service fail): membership
        # answers 500 and closes that connection.
        failed = await gateway.post("/_test/fail")
        assert failed.status_code == 500
        # At once, on what was that connection: a POST is never retried, so a dead connection would be a 503.
        follow = await gateway.post("/api/v2/tags", headers=membership_key, json={"name": f"t-{uuid.uuid4().hex}"})
        assert follow.status_code == 201, follow.text
        assert (await gateway.get("/join")).status_code == 200


@pytest.mark.fault
async def test_requests_right_after_a_service_crashed_and_came_back_are_answered(gateway: httpx.AsyncClient) -> None:
    assert set(await _burst(gateway)) == {200}  # the gateway now holds kept-alive connections to events
    launcher.kill_service("events")  # SIGKILL: every connection it had is gone
    launcher.start_service("events")
    assert launcher.service_ready("events", 180), launcher.log_tail("events")
    assert set(await _burst(gateway)) == {200}
    assert set(await _burst(gateway)) == {200}
