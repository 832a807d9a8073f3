"""Rate limits of the events service's public forms (#14.8), keyed on the real client address: a client that is
not a trusted proxy cannot pick its own address with X-Forwarded-For to dodge them."""

from __future__ import annotations

import uuid

import httpx

from services.events.domain import RSVP_PER_IP
from tests.events.conftest import schedule


async def test_a_burst_from_an_untrusted_peer_is_limited_whatever_x_forwarded_for_it_sends(events_server, client,
                                                                                             organiser, db):
    meeting = await schedule(client, organiser, capacity=100)
    limit = await db.fetchval("SELECT max_count FROM rate_limits WHERE name = $1", RSVP_PER_IP)
    # Straight at the service from an address that is no trusted proxy (TRUSTED_PROXIES: loopback).
    transport = httpx.ASGITransport(app=events_server.app, client=(f"203.0.113.{uuid.uuid4().int % 250 + 1}", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://events") as stranger:
        async def rsvp(n: int) -> httpx.Response:
            tag = uuid.uuid4().hex[:8]
            return await stranger.post(f"/events/{meeting['id']}/rsvp", data={
                "name": f"Spoof {tag}", "email": f"spoof-{tag}@example.org"},
                headers={"X-Forwarded-For": f"198.51.100.{n % 250 + 1}", "X-Real-IP": f"192.0.2.{n % 250 + 1}"})

        answers = [await rsvp(n) for n in range(limit)]
        assert {r.status_code for r in answers} == {303}
        over = await rsvp(limit)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    assert await db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", meeting["id"]) == limit
