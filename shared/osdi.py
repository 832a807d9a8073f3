"""OSDI's HAL+JSON as every service serves it under `/api/v2`: the media type, the `osdi` curie, errors, and
paged collections with their `_links` and `_embedded` items. Each service adds its own resources."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from shared.web import MAX_PAGE

PREFIX = "/api/v2"
HAL = "application/hal+json"
MAX_PER_PAGE = 25
CURIES = [{"name": "osdi", "href": "https://opensupporter.github.io/osdi-docs/{rel}", "templated": True}]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE)]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE)]


def hal(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=HAL)


def hal_error(status: int, message: str) -> JSONResponse:
    return hal({"error": message}, status)


def api_url(request: Request) -> str:
    """The API's root at the service's public address (what links point at)."""
    return request.app.state.runtime.settings.public_base_url.rstrip("/") + PREFIX


def without_paging(request: Request) -> str:
    """The URL asked for, less its `page` and `per_page` (other query parameters stay)."""
    return str(request.url.remove_query_params(["page", "per_page"]))


def collection(url: str, rel: str, items: list[dict[str, Any]], total: int, page: int,
               per_page: int) -> dict[str, Any]:
    """Page `page` of a collection at `url`: `items` embedded as `osdi:<rel>`, and self/next/previous links."""
    sep = "&" if "?" in url else "?"
    pages = max(1, math.ceil(total / per_page))
    links: dict[str, Any] = {
        "self": {"href": f"{url}{sep}page={page}&per_page={per_page}"},
        f"osdi:{rel}": [item["_links"]["self"] for item in items],
        "curies": CURIES,
    }
    if page < pages:
        links["next"] = {"href": f"{url}{sep}page={page + 1}&per_page={per_page}"}
    if page > 1:
        links["previous"] = {"href": f"{url}{sep}page={page - 1}&per_page={per_page}"}
    return {"total_pages": pages, "per_page": per_page, "page": page, "total_records": total,
            "_links": links, "_embedded": {f"osdi:{rel}": items}}
