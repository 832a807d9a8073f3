"""What the public gateway shows and says (#14.9): the services' operational and documentation routes are not
public, every answer carries the headers that tell browsers to keep pages to this site, nothing personal is
cached, and the access log keeps no query strings (they carry tokens)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from deploy.local import launcher

HIDDEN = ["/_svc/membership/readyz", "/_svc/events/metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
          "/openapi.json", "/metrics", "//openapi.json", "/%6fpenapi.json", "/api/v2/../metrics"]


@pytest.mark.parametrize("path", HIDDEN)
async def test_operational_and_documentation_routes_are_not_public(gateway: httpx.AsyncClient, path: str) -> None:
    status, text = await _raw_get(gateway, path)
    assert status == 404
    assert "openapi" not in text and "# HELP" not in text


async def _raw_get(gateway: httpx.AsyncClient, path: str) -> tuple[int, str]:
    """GET `path` byte for byte as an attacker would send it (httpx would tidy "//x" and "a/../b" first)."""
    url = gateway.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


async def test_they_stay_on_each_services_own_port(system: None) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for service, port in launcher.SERVICE_PORTS.items():
            assert (await client.get(f"http://127.0.0.1:{port}/openapi.json")).status_code == 200, service
            assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200, service


@pytest.mark.parametrize("path", ["/join", "/events", "/campaigns", "/no-such-page", "/signin"])
async def test_every_page_tells_browsers_to_keep_it_to_this_site(gateway: httpx.AsyncClient, path: str) -> None:
    headers = (await gateway.get(path)).headers
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy.split(
        "script-src")[1].split(";")[0]
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in headers  # the public address is http here


async def test_https_behind_a_terminator_adds_hsts(gateway: httpx.AsyncClient) -> None:
    headers = (await gateway.get("/join", headers={"X-Forwarded-Proto": "https"})).headers
    assert headers["strict-transport-security"].startswith("max-age=")


async def test_pages_with_personal_data_or_tokens_are_not_cached(
    gateway: httpx.AsyncClient, network_organiser: dict[str, str]
) -> None:
    for path in ["/join", "/signin", "/me", "/preferences?token=x", "/events"]:
        assert (await gateway.get(path)).headers.get("cache-control") == "no-store", path
    for path in ["/members", "/notifications/organise/deliveries", "/campaigns/organise/long-tail"]:
        response = await gateway.get(path, headers=network_organiser)
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store", path
    static = await gateway.get("/static/membership/groundswell.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")


async def test_the_access_log_keeps_paths_but_not_query_strings(gateway: httpx.AsyncClient) -> None:
    secret, request_id = uuid.uuid4().hex, f"log-{uuid.uuid4().hex}"
    await gateway.get(f"/preferences?token={secret}", headers={"X-Request-ID": request_id})
    log = launcher.log_path("gateway")
    for _ in range(50):  # nginx writes the line once the answer is sent
        if request_id in log.read_text(errors="replace"):
            break
        await asyncio.sleep(0.1)
    line = next(x for x in log.read_text(errors="replace").splitlines() if request_id in x)
    assert '"GET /preferences HTTP/1.1"' in line and secret not in line
