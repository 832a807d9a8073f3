"""OSDI's HAL+JSON as every service serves it under `/api/v2`: the media type, the `osdi` curie, errors, and
paged collections with their `_links` and `_embedded` items. Each service adds its own resources."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.web import MAX_PAGE

PREFIX = "/api/v2"
HAL = "application/hal+json"
MAX_PER_PAGE = 25
CURIES = [{"name": "osdi", "href": "https://opensupporter.github.io/osdi-docs/{rel}", "templated": True}]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE)]
# Action Network caps `per_page` at 25 silently (clients such as parsons rely on it): so does every collection here.
PerPage = Annotated[int, Query(ge=1), AfterValidator(lambda n: min(n, MAX_PER_PAGE))]
# A resource's own id, and the same id as Action Network's clients read it (parsons keeps `action_network:` ids).
ID_PREFIXES = ("groundswell", "action_network")


def hal(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=HAL)


def hal_error(status: int, message: str) -> JSONResponse:
    return hal({"error": message}, status)


def identifiers(resource_id: str) -> list[str]:
    """OSDI identifiers of a resource: the system's own first, then the form Action Network's clients parse."""
    return [f"{prefix}:{resource_id}" for prefix in ID_PREFIXES]


def bare_id(value: str) -> str:
    """The id in a URL, given bare or with either prefix (`action_network:<id>` finds what `<id>` finds)."""
    prefix, sep, rest = value.partition(":")
    return rest if sep and prefix in ID_PREFIXES else value


def install_error_bodies(app: FastAPI) -> None:
    """OSDI's `{"error": "…"}` for every error under `/api/v2`; elsewhere the handlers installed before this one
    (the shared error pages for browsers, FastAPI's `{"detail"}` for JSON callers) answer as they did."""
    other_http = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    other_invalid = app.exception_handlers.get(RequestValidationError, request_validation_exception_handler)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not request.url.path.startswith(PREFIX):
            return await _answer(other_http(request, exc))
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers, media_type=HAL)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if not request.url.path.startswith(PREFIX):
            return await _answer(other_invalid(request, exc))
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return hal_error(422, problems or "The request is not valid")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


async def _answer(response: Response | Awaitable[Response]) -> Response:
    """An exception handler's answer, whether the handler was a coroutine or a plain function."""
    return await response if inspect.isawaitable(response) else response


class FilterError(ValueError):
    """A `filter` this server does not support: answered with a 400 that says what is supported."""


_CLAUSE = re.compile(r"\s*(?P<field>[a-z_]+)\s+(?P<op>[a-z]+)\s+'(?P<value>(?:[^']|'')*)'\s*", re.IGNORECASE)
_AND = re.compile(r"and\b", re.IGNORECASE)


def parse_filter(text: str, supported: Mapping[str, tuple[str, ...]]) -> list[tuple[str, str, str]]:
    """OData's `filter` as Action Network takes it: `field op 'value'` clauses joined by `and`, each a
    (field, op, value) that `supported` (field -> operators) allows; anything else is a FilterError."""
    allowed = "; ".join(f"{f} {'/'.join(ops)}" for f, ops in supported.items())
    clauses, pos = [], 0
    while True:
        found = _CLAUSE.match(text, pos)
        if found is None:
            raise FilterError(f"The filter is not understood: write field op 'value' joined by and ({allowed})")
        field, op = found["field"].lower(), found["op"].lower()
        if op not in supported.get(field, ()):
            raise FilterError(f"Filtering on {field} {op} is not supported: only {allowed}")
        clauses.append((field, op, found["value"].replace("''", "'")))
        pos = found.end()
        if pos == len(text):
            return clauses
        joined = _AND.match(text, pos)
        if joined is None:
            raise FilterError(f"Filter clauses are joined only with and ({allowed})")
        pos = joined.end()


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
