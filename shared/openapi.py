"""Each service's OpenAPI document says what its routes really answer (#18), so a client generator and a fuzzer can
rely on it: FastAPI documents a route's success and its own validation error; the answers every route shares are
added here, from what the route declares it needs.

- Every route may answer 400 (the edge guards refuse control characters; a form or body that cannot be read), 404
  (an id that leads nowhere, an unknown page) and 422 (a parameter of the wrong type, or a form to correct).
- A route that needs an organiser's session or an API key answers 401 without one and 403 outside its scope; a
  page that needs a session sends a browser to sign in (303), as a page that takes a form does after it.
- Errors are JSON (`{"detail": …}`; under /api/v2 OSDI's `{"error": …}` as HAL+JSON) for API callers and the
  shared error page (HTML) for browsers, whichever the caller asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute

PREFIX = "/api/v2"
HAL = "application/hal+json"
# The dependencies that ask for an organiser's session or an API key (shared/auth.py and the services' own).
AUTH_DEPENDENCIES = frozenset(
    {"require_organiser", "optional_organiser", "require_api_token", "api_caller", "current_organiser", "_signed_in"}
)
JSON_ERROR = {
    "type": "object",
    "properties": {
        "detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "error": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
OSDI_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
# Routes that serve a file: its media type, by the path's ending.
FILE_TYPES = {"ics": "text/calendar", "csv": "text/csv"}
REASONS = {
    303: "Sent on: to sign in, or to the page that follows a form",
    400: "Refused: a control character, or a body or form that cannot be read",
    401: "No organiser's session or API key, or one that is forged, expired or revoked",
    403: "Outside the part of the network the session or key was made for",
    404: "Nothing with that id (that the caller may see)",
    409: "Refused as things stand (closed, full, already done)",
    422: "A parameter of the wrong type or out of range, or a form to correct",
}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def needs_a_caller(route: APIRoute) -> bool:
    """Whether the route asks for an organiser's session or an API key."""
    return any(getattr(call, "__name__", "") in AUTH_DEPENDENCIES for call in _calls(route.dependant))


def _error(description: str, osdi: bool, file: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": OSDI_ERROR if osdi else JSON_ERROR},
                               "text/html": {"schema": {"type": "string"}}}
    if file:  # a calendar or an export says what went wrong in a line of text
        content["text/plain"] = {"schema": {"type": "string"}}
    if osdi:
        content[HAL] = {"schema": OSDI_ERROR}
    return {"description": description, "content": content}


def shared_answers(route: APIRoute) -> dict[int, dict[str, Any]]:
    """The answers a route gives besides its own: see the module's docstring."""
    osdi = route.path.startswith(PREFIX)
    statuses = [400, 404, 422]
    page = issubclass(route.response_class, HTMLResponse) if isinstance(route.response_class, type) else False
    if needs_a_caller(route):
        statuses += [401, 403]
    elif any(p.name == "token" for p in route.dependant.query_params):
        statuses.append(401)  # a signed link (a sign-in link) that is not valid or has expired
    file = route.path.rsplit(".", 1)[-1] in FILE_TYPES
    answers = {status: _error(REASONS[status], osdi, file) for status in statuses}
    for status, declared in (route.responses or {}).items():  # a route's own errors, described only: their bodies
        if str(status).isdigit() and int(status) >= 400 and "content" not in declared:
            answers[int(status)] = _error(declared.get("description", ""), osdi, file)
    methods = route.methods or set()
    if "OPTIONS" in methods:
        answers[204] = {"description": "A browser's preflight, answered for the origins allowed to post here"}
    if page and (needs_a_caller(route) or methods & {"POST", "PUT", "PATCH", "DELETE"}):
        answers[303] = {"description": REASONS[303], "headers": {"Location": {"schema": {"type": "string"}}}}
    return answers


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """The API routes among `routes`, and in the routers included there (FastAPI keeps an included router whole)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(router.routes)


def complete_openapi(app: FastAPI) -> None:
    """The app's OpenAPI document with every route's shared answers (a route's own declarations win)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = build()
        for route in _api_routes(app.routes):
            if not route.include_in_schema:
                continue
            operations = document.get("paths", {}).get(route.path_format, {})
            for method in route.methods or ():
                operation = operations.get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                if (media := FILE_TYPES.get(route.path.rsplit(".", 1)[-1])) and "200" in responses:
                    responses["200"]["content"] = {media: {"schema": {"type": "string"}}}
                declared = {int(s) for s, r in (route.responses or {}).items() if str(s).isdigit() and "content" in r}
                for status, answer in shared_answers(route).items():
                    if status not in declared:
                        responses[str(status)] = answer
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
