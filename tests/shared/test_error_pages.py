"""Errors are pages for people's browsers and JSON for programs, the same in every service (shared/web.py)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException

from shared.web import add_error_pages

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def _app() -> FastAPI:
    app = FastAPI()
    add_error_pages(app, "membership")

    @app.post("/form")
    async def form(count: int) -> dict[str, int]:
        return {"count": count}

    @app.get("/refused")
    async def refused() -> None:
        raise HTTPException(403, "Only the network's organisers do this")

    return app


async def _get(path: str, headers: dict[str, str], method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://test") as client:
        return await client.request(method, path, headers=headers)


async def test_an_unknown_address_is_a_page_with_links_home_and_to_join_for_a_browser():
    response = await _get("/nothing-here", BROWSER)
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert "<h1>Page not found</h1>" in response.text
    assert '<a href="/">Go to the home page</a>' in response.text and 'href="/join"' in response.text


async def test_programs_and_api_paths_keep_json_errors():
    assert (await _get("/nothing-here", {"Accept": "application/json"})).json() == {"detail": "Not Found"}
    assert (await _get("/api/v2/nothing", BROWSER)).json() == {"detail": "Not Found"}
    invalid = await _get("/form?count=many", {}, "POST")
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["query", "count"]


async def test_a_wrong_method_a_failed_validation_and_a_refusal_are_pages_too():
    wrong_method = await _get("/refused", BROWSER, "DELETE")
    assert wrong_method.status_code == 405 and "<h1>This page cannot do that</h1>" in wrong_method.text
    invalid = await _get("/form?count=many", BROWSER, "POST")
    assert invalid.status_code == 422 and "<h1>Something in the form could not be used</h1>" in invalid.text
    refused = await _get("/refused", BROWSER)
    assert refused.status_code == 403 and "Only the network&#39;s organisers do this" in refused.text
