"""Whose address a request comes from (#14.8): proxy headers are believed only from the trusted proxies, and then
only for what the proxy itself added (the right-most address that is not a trusted proxy)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.client_address import TrustedProxies, client_address, parse_networks

LOOPBACK = parse_networks("127.0.0.1/32, ::1/128")
GATEWAYS = parse_networks("10.20.0.0/16")


def test_headers_from_an_untrusted_peer_are_ignored():
    assert client_address("203.0.113.9", "198.51.100.1", "198.51.100.2", LOOPBACK) == "203.0.113.9"


def test_behind_the_gateway_the_client_is_what_the_gateway_saw_not_what_the_client_wrote():
    # nginx appends the address it saw to whatever X-Forwarded-For the client sent.
    assert client_address("10.20.0.5", "1.2.3.4, 203.0.113.9", None, GATEWAYS) == "203.0.113.9"
    assert client_address("10.20.0.5", "203.0.113.9, 10.20.0.7", None, GATEWAYS) == "203.0.113.9"  # two proxies
    assert client_address("10.20.0.5", None, "203.0.113.9", GATEWAYS) == "203.0.113.9"
    assert client_address("10.20.0.5", None, None, GATEWAYS) == "10.20.0.5"


def test_nonsense_in_the_headers_falls_back_to_the_peer():
    assert client_address("10.20.0.5", "not-an-address", None, GATEWAYS) == "10.20.0.5"
    assert client_address("10.20.0.5", "", "also not", GATEWAYS) == "10.20.0.5"


def test_a_typo_in_trusted_proxies_stops_the_service_rather_than_trusting_anyone():
    with pytest.raises(ValueError):
        parse_networks("10.20.0.0/16, 10.300.0.0/16")


async def _seen_by_app(peer: str, headers: dict[str, str], trusted: str) -> tuple[str, str]:
    async def whoami(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.client.host if request.client else ''} {request.url.scheme}")

    app = TrustedProxies(Starlette(routes=[Route("/", whoami)]), parse_networks(trusted))
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        host, scheme = (await client.get("/", headers=headers)).text.split()
    return host, scheme


async def test_the_middleware_rewrites_the_client_only_for_a_trusted_peer():
    spoofed = {"X-Forwarded-For": "198.51.100.1", "X-Real-IP": "198.51.100.2", "X-Forwarded-Proto": "https"}
    assert await _seen_by_app("203.0.113.9", spoofed, "10.20.0.0/16") == ("203.0.113.9", "http")
    assert await _seen_by_app("10.20.0.5", spoofed, "10.20.0.0/16") == ("198.51.100.1", "https")
