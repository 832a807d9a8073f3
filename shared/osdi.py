"""OSDI's HAL+JSON as every service serves it under `/api/v2`: the media type, the `osdi` curie, errors, and
paged collections with their `_links` and `_embedded` items. Each service adds its own resources."""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, NoReturn
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.contact import collapse_spaces
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


class HalResponse(JSONResponse):
    """JSON as OSDI serves it (the OpenAPI document says so for every route of an OSDI router)."""

    media_type = HAL


_LINK = {"type": "object", "required": ["href"], "properties": {"href": {"type": "string"}}}
RESOURCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["identifiers", "_links"],
    "properties": {
        "identifiers": {"type": "array", "minItems": 1,
                        "items": {"type": "string", "pattern": "^(groundswell|action_network):"}},
        "created_date": {"type": "string"},
        "modified_date": {"type": "string"},
        "_links": {"type": "object", "required": ["self"], "properties": {"self": _LINK}},
    },
}


def one(description: str = "The resource") -> dict[int | str, dict[str, Any]]:
    """A route's `responses`: one OSDI resource."""
    return {200: {"description": description, "content": {HAL: {"schema": RESOURCE_SCHEMA}}}}


def page_of(rel: str) -> dict[int | str, dict[str, Any]]:
    """A route's `responses`: a page of a collection, its items embedded as `osdi:<rel>`."""
    schema = {
        "type": "object",
        "required": ["total_pages", "per_page", "page", "total_records", "_links", "_embedded"],
        "properties": {
            "total_pages": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE},
            "page": {"type": "integer", "minimum": 1},
            "total_records": {"type": "integer", "minimum": 0},
            "_links": {"type": "object", "required": ["self"], "properties": {"self": _LINK}},
            "_embedded": {"type": "object", "required": [f"osdi:{rel}"],
                          "properties": {f"osdi:{rel}": {"type": "array", "items": RESOURCE_SCHEMA}}},
        },
    }
    return {200: {"description": f"A page of {rel}", "content": {HAL: {"schema": schema}}}}


def router() -> APIRouter:
    """An OSDI router: under /api/v2, answering HAL+JSON (its errors are documented with every route's, by
    shared/openapi.py)."""
    return APIRouter(prefix=PREFIX, tags=["OSDI"], default_response_class=HalResponse)


def refuse(status: int, message: str) -> NoReturn:
    """Stop the request with OSDI's `{"error": message}` (install_error_bodies renders it)."""
    raise StarletteHTTPException(status, message)


def problems(exc: ValidationError) -> str:
    """A pydantic error in words: field path and what is wrong, for an OSDI error body."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()) or "Not valid"


async def read_body(request: Request) -> dict[str, Any]:
    """A request's body as an object: JSON, or a form's flat fields (parsons' update_event sends its payload
    form-encoded, under its JSON content type)."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        try:
            return dict(parse_qsl(raw.decode(), strict_parsing=True, max_num_fields=100))
        except (ValueError, UnicodeDecodeError):
            refuse(400, "Send a JSON object")
    if not isinstance(body, dict):
        refuse(400, "Send a JSON object")
    return body


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself (JSON or a form): the model's schema as its body."""
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema}, "application/x-www-form-urlencoded": {"schema": schema}}}}


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
        errors = exc.errors()
        found = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in errors)
        in_body = any(e["loc"][:1] == ("body",) for e in errors)  # a body we refuse is a 400, as OSDI's are
        return hal_error(400 if in_body else 422, found or "The request is not valid")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    _hoist_body_definitions(app)


def _hoist_body_definitions(app: FastAPI) -> None:
    """Schemas of bodies a route reads itself (`request_body`) keep their nested models under `$defs`, referred to
    as components: moved to `components.schemas`, so the OpenAPI document resolves (a client generator needs it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                content = operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
                for media in content.values():
                    schemas.update(media.get("schema", {}).pop("$defs", {}))
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


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


class OsdiEmail(BaseModel):
    address: str = Field("", max_length=254)
    primary: bool | None = None
    status: str | None = Field(None, max_length=20)


class OsdiPostalAddress(BaseModel):
    model_config = ConfigDict(extra="allow")

    postal_code: str = Field("", max_length=20)


class OsdiPerson(BaseModel):
    """A person as a record helper takes them (Action Network's form): an email address is enough."""

    model_config = ConfigDict(extra="allow")

    given_name: str = Field("", max_length=200)
    family_name: str = Field("", max_length=200)
    email_addresses: list[OsdiEmail] = Field([], max_length=20)
    postal_addresses: list[OsdiPostalAddress] = Field([], max_length=20)

    @property
    def name(self) -> str:
        return collapse_spaces(f"{self.given_name} {self.family_name}")

    @property
    def email(self) -> str:
        primary = next((e for e in self.email_addresses if e.primary), None)
        return (primary or (self.email_addresses[0] if self.email_addresses else OsdiEmail())).address

    @property
    def postcode(self) -> str:
        return self.postal_addresses[0].postal_code if self.postal_addresses else ""


class Link(BaseModel):
    href: str = Field(max_length=2000)


class PersonLinks(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    person: Link | None = Field(None, alias="osdi:person")


def person_id_of(links: PersonLinks | None) -> str | None:
    """The person an `osdi:person` link points at (`…/people/<id>`, the id bare or prefixed), or None."""
    href = links.person.href if links is not None and links.person is not None else ""
    if "/people/" not in href:
        return None
    return bare_id(href.rstrip("/").rsplit("/", 1)[-1]) or None


def page_held(request: Request, rel: str, rows: list[Any], render: Callable[[Request, Any], dict[str, Any]],
              page: int, per_page: int) -> JSONResponse:
    """A page of a collection held in full (a person's attendances or signatures: a few, already filtered by the
    key's scope)."""
    items = [render(request, row) for row in rows[(page - 1) * per_page:page * per_page]]
    return hal(collection(without_paging(request), rel, items, len(rows), page, per_page))


def one_held(request: Request, rows: list[Any], resource_id: str, render: Callable[[Request, Any], dict[str, Any]],
             what: str) -> JSONResponse:
    """The row of `rows` with the id asked for (bare or prefixed), or a 404 naming `what`."""
    found = [row for row in rows if row.id == bare_id(resource_id)]
    if not found:
        return hal_error(404, f"There is no {what} with that id for this person that this API key may see")
    return hal(render(request, found[0]))
