"""The HTTP side every service shares: request ids, the guards at the edge (control characters, caching), health,
readiness, metrics, templates (and the filters every page may use), static files, and errors as pages for people's
browsers (JSON for APIs)."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import auth, metrics, tracing
from shared.logging import correlation_id_var
from shared.ratelimit import RateLimited
from shared.workspace import organiser_menu

SHARED_TEMPLATES = Path(__file__).parent / "templates"
SHARED_STATIC = Path(__file__).parent / "static"
REQUEST_ID_HEADER = "x-request-id"
NETWORK_TIMEZONE = "Europe/London"
# C0 controls and DEL. Text may keep tab, newline and carriage return (a textarea's lines); a path or a name may not.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CONTROL_CHARACTERS_IN_PATH = re.compile(r"[\x00-\x1f\x7f]")
FORM = "application/x-www-form-urlencoded"
# The highest page number any list serves: its offset stays far inside PostgreSQL's bigint (a bigger one was a 500).
MAX_PAGE = 100_000


def page_count(total: int, per_page: int) -> int:
    """How many pages `total` rows fill, `per_page` a page: at least one (an empty list is one empty page)."""
    return max(1, -(-total // per_page))


# "Joined at least this many days ago": a century, so the date it means stays a date (a bigger one was a 500).
DaysAgo = Annotated[int, Query(le=36_500)]


class RequestIdMiddleware:
    """The request id (set by the gateway, or made here) becomes the correlation id of everything downstream."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:100]
                break
        request_id = request_id or uuid.uuid4().hex
        token = correlation_id_var.set(request_id)
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            with tracing.serving(request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            correlation_id_var.reset(token)
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(
                self.service, scope.get("method", ""), path, str(status_holder["status"])
            ).observe(time.perf_counter() - start)


class HttpMiddleware:
    """An ASGI middleware for HTTP requests (`http`); lifespan and other messages pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RejectControlCharacters(HttpMiddleware):
    """Answers 400 to a request with a NUL or another control character in its path, query string, form or JSON
    body, before any route sees it: PostgreSQL refuses NUL in text, and no route takes binary."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        where = _control_characters_in_url(scope)
        content_type = _content_type(scope)
        if where is None and (content_type == FORM or content_type.endswith(("/json", "+json"))):
            body, receive = await _read_body(receive)
            where = _control_characters_in_body(content_type, body)
        if where is None:
            await self.app(scope, receive, send)
            return
        message = f"The request has a control character (such as NUL) in its {where}, which no field accepts."
        await JSONResponse({"detail": message, "error": message}, status_code=400)(scope, receive, send)


def _content_type(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def _control_characters_in_url(scope: Scope) -> str | None:
    if CONTROL_CHARACTERS_IN_PATH.search(scope.get("path", "")):
        return "path"
    if CONTROL_CHARACTERS.search(unquote(scope.get("query_string", b"").decode("latin-1"), errors="replace")):
        return "query string"
    return None


def _control_characters_in_body(content_type: str, body: bytes) -> str | None:
    text = body.decode("utf-8", errors="replace")
    if content_type == FORM:
        fields = parse_qsl(text, keep_blank_values=True)
        return "form" if any(CONTROL_CHARACTERS.search(k + v) for k, v in fields) else None
    try:
        document = json.loads(text)
    except ValueError:
        return None  # not JSON: the route's own validation answers
    return "JSON body" if _has_control_characters(document) else None


def _has_control_characters(value: Any) -> bool:
    if isinstance(value, str):
        return CONTROL_CHARACTERS.search(value) is not None
    if isinstance(value, dict):
        return any(_has_control_characters(k) or _has_control_characters(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_control_characters(v) for v in value)
    return False


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that hands it on to the app as if it had not been read."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


class CloseAfterFailure(HttpMiddleware):
    """A request that fails answers 500 with `Connection: close`, so the gateway drops that connection instead of
    keeping it for the next request (the server closes it after a failure: the next request would get a 503)."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception:
            if not started:
                response = Response(
                    "Internal Server Error", status_code=500, media_type="text/plain", headers={"Connection": "close"}
                )
                await response(scope, receive, send)
            raise  # still logged by the server, as every failure is


class NoStore(HttpMiddleware):
    """Every page and answer may carry tokens or personal data, so no browser or proxy keeps a copy
    (`Cache-Control: no-store`), unless a route chose its own; the shared static files stay cacheable."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("path", "").startswith("/static/"):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    message["headers"] = [*headers, (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, send_no_store)


class RefuseCrossSiteForms(HttpMiddleware):
    """A request that would change something (POST, PUT, PATCH, DELETE) with an organiser's session cookie is
    refused (403, nothing done) unless the browser says it comes from this site: its `Origin` (or, without one, its
    `Referer`) is the public address (`PUBLIC_BASE_URL`) or the address it was sent to (`Host`). Another site's
    form cannot act for a signed-in organiser. Requests without the cookie (the public forms, the embeddable join
    form), and API calls that carry their credentials in a header (`Authorization: Bearer`, `OSDI-API-Token`,
    which no other site's page can set), are not affected; nor are non-browser clients that send neither header.
    """

    SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

    def __init__(self, app: ASGIApp, public_base_url: str, session_cookie: str) -> None:
        super().__init__(app)
        self.public_origin = _origin(public_base_url)
        self.cookie_prefix = f"{session_cookie}=".encode()

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method", "GET") in self.SAFE or self._same_site(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        message = "This form was sent from another site, so it was not acted on. Use the form on this site."
        templates = getattr(request.app.state, "error_templates", None) if "app" in scope else None
        if wants_html(request) and templates is not None:
            response = error_page(request, templates, 403, message)
        else:
            response = JSONResponse({"detail": message}, status_code=403)
        await response(scope, receive, send)

    def _same_site(self, scope: Scope) -> bool:
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", []):
            if name == b"cookie" and name in headers:
                headers[name] += b"; " + value
            else:
                headers.setdefault(name, value)
        cookies = headers.get(b"cookie", b"")
        if not any(part.strip().startswith(self.cookie_prefix) for part in cookies.split(b";")):
            return True  # no session to ride on
        if b"authorization" in headers or b"osdi-api-token" in headers:
            return True  # credentials in a header: no other site's page can send them
        claimed = headers.get(b"origin") or headers.get(b"referer")
        if claimed is None:
            return True  # not a browser: browsers send Origin with every cross-site POST
        origin = _origin(claimed.decode("latin-1"))
        if origin is None:
            return False  # `Origin: null` (a sandboxed frame, a privacy redirect) or garbage
        host = headers.get(b"host", b"").decode("latin-1").lower()
        return origin == self.public_origin or urlsplit(origin).netloc == host


def _origin(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) address, lowercased; None for anything else."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def make_templates(service_templates: Path | None, globals_: dict[str, Any] | None = None) -> Jinja2Templates:
    loaders = [FileSystemLoader(str(service_templates))] if service_templates else []
    loaders.append(FileSystemLoader(str(SHARED_TEMPLATES)))
    # auto_reload off: templates change only with a new release, so a page does not stat every template it extends
    # and includes on each render to see whether it changed.
    env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(["html", "xml"]), auto_reload=False)
    env.globals.update(globals_ or {})
    env.globals["signed_in_organiser"] = signed_in_organiser
    env.globals["organiser_menu"] = organiser_menu
    env.filters["local_time"] = local_time
    env.filters["short_date"] = short_date
    env.filters["short_date_time"] = short_date_time
    env.filters["numeric_date_time"] = numeric_date_time
    env.filters["person"] = person_name
    return Jinja2Templates(env=env)


NO_NAME = "Name not given"


def person_name(name: str | None) -> str:
    """A person as pages name them: someone added with an email address alone (an OSDI client's signup may give no
    name) is "Name not given", never an empty link or heading."""
    return (name or "").strip() or NO_NAME


def signed_in_organiser(request: Request | None) -> auth.OrganiserScope | None:
    """The organiser a page is for, for the shared organiser layout (its menu, their name, sign-out): the one the
    route's own dependency checked (signature, age and revocation, `shared.auth`); None on pages that checked
    nobody, and when nobody is signed in."""
    if request is None:
        return None
    return getattr(request.state, "organiser", None)


# English names, as strftime writes them in the C locale the services run in; formatting a time by hand is several
# times quicker than strftime, which pages call for every row (a member's timeline, 500 rows of the long tail).
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")
MONTH_ABBREVIATIONS = tuple(m[:3] for m in MONTH_NAMES)


def local_time(value: datetime | None, zone: str = NETWORK_TIMEZONE, fmt: str = "long") -> str:
    """A time as people in `zone` read it: `Thursday 4 March 2027, 6:30pm` (`fmt` "time": `6:30pm`; "input":
    the value of an `<input type="datetime-local">`)."""
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(zone or NETWORK_TIMEZONE))
    hour = local.hour % 12 or 12
    clock = f"{hour}{'am' if local.hour < 12 else 'pm'}" if local.minute == 0 else (
        f"{hour}:{local.minute:02d}{'am' if local.hour < 12 else 'pm'}")
    if fmt == "time":
        return clock
    if fmt == "input":  # seconds only when there are some, so nothing is lost
        return local.strftime("%Y-%m-%dT%H:%M:%S" if local.second else "%Y-%m-%dT%H:%M")
    return f"{DAY_NAMES[local.weekday()]} {local.day} {MONTH_NAMES[local.month - 1]} {local.year}, {clock}"


def short_date(value: datetime | None) -> str:
    """`04 Mar 2027` (strftime's `%d %b %Y`), in the value's own time zone; empty for None."""
    if value is None:
        return ""
    return f"{value.day:02d} {MONTH_ABBREVIATIONS[value.month - 1]} {value.year}"


def short_date_time(value: datetime | None) -> str:
    """`04 Mar 2027, 18:30` (strftime's `%d %b %Y, %H:%M`), in the value's own time zone; empty for None."""
    if value is None:
        return ""
    return f"{value.day:02d} {MONTH_ABBREVIATIONS[value.month - 1]} {value.year}, {value.hour:02d}:{value.minute:02d}"


def numeric_date_time(value: datetime | None) -> str:
    """`2027-03-04 18:30` (strftime's `%Y-%m-%d %H:%M`), in the value's own time zone; empty for None."""
    if value is None:
        return ""
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}"


# What a person reads for an HTTP error on a page: (title, what happened). A route's own words (an HTTPException's
# detail) replace the second for statuses not listed in GENERIC_DETAIL.
ERROR_PAGES: dict[int, tuple[str, str]] = {
    400: ("Something in that request could not be used", "Please go back and try again."),
    403: ("You cannot do this", "Your account does not allow it."),
    404: ("Page not found", "There is no page at this address. If you typed it, check it; if you followed a link, "
          "the page may have moved or ended."),
    405: ("This page cannot do that", "The page exists, but not for what your browser asked. Please go back and "
          "use the page's own links and buttons."),
    429: ("Too many attempts", "Too many attempts came from your connection in a short while. Please wait a few "
          "minutes and try again."),
    422: ("Something in the form could not be used", "Please go back, check what you entered and send it again."),
    500: ("Something went wrong on our side", "Please try again in a few minutes."),
}
GENERIC_DETAIL = {404, 405, 422, 500}  # FastAPI's words for these ("Not Found", field lists) are not for people


def wants_html(request: Request) -> bool:
    """A browser asking for a page: HTML accepted, and not an API path (`/api/...`, `/campaigns/api/...`)."""
    if "/api/" in f"{request.url.path}/" or request.url.path.endswith(".json"):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_page(
    request: Request,
    templates: Jinja2Templates,
    status: int,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An HTTP error as a page in the shared layout (`templates`: `make_templates(None, {"service": …})`)."""
    title, message = ERROR_PAGES.get(status, ERROR_PAGES[400] if status < 500 else ERROR_PAGES[500])
    if isinstance(detail, str) and detail and status not in GENERIC_DETAIL:
        message = detail
    runtime = getattr(request.app.state, "runtime", None)
    network_name = runtime.settings.network_name if runtime else "Groundswell"
    context = {"title": title, "message": message, "status": status, "network_name": network_name}
    return templates.TemplateResponse(request, "error.html", context, status_code=status, headers=headers)


def add_error_pages(app: FastAPI, service: str) -> None:
    """HTTP errors (an unknown address, a wrong method, a form that failed validation, a crash) as a page in the
    shared layout for browsers; JSON callers get FastAPI's JSON as before."""
    templates = make_templates(None, {"service": service})
    app.state.error_templates = templates

    def page_for(
        request: Request, status: int, detail: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        return error_page(request, templates, status, detail, headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not wants_html(request):
            return await http_exception_handler(request, exc)
        return page_for(request, exc.status_code, exc.detail, getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if not wants_html(request):
            return await request_validation_exception_handler(request, exc)
        return page_for(request, 422)

    async def crash(request: Request, exc: Exception) -> Response:
        if not wants_html(request):
            return PlainTextResponse("Internal Server Error", status_code=500)
        return page_for(request, 500)

    async def rate_limited(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RateLimited)
        seconds = exc.retry_after_s
        wait = f"{seconds} seconds" if seconds < 120 else f"{(seconds + 59) // 60} minutes"
        message = (f"Too many attempts came from your connection in a short while, so we have stopped taking "
                   f"them for now. Please wait {wait} and try again; what you typed has not been sent.")
        headers = {"Retry-After": str(exc.retry_after_s)}
        if not wants_html(request):
            return JSONResponse({"detail": message}, status_code=429, headers=headers)
        return page_for(request, 429, message, headers)

    app.add_exception_handler(RateLimited, rate_limited)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, crash)


def add_operational_routes(app: FastAPI, service: str, readiness: Any) -> None:
    """`/healthz` (the process is alive), `/readyz` (its dependencies answer), `/metrics`, shared static files,
    error pages."""
    add_error_pages(app, service)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks: dict[str, bool] = await readiness()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks, "service": service}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        # Readiness measured at each scrape, so an alert sees a service that stopped being ready (docs/operations.md).
        for dependency, ok in (await readiness()).items():
            metrics.READY.labels(service, dependency).set(1 if ok else 0)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount(f"/static/{service}", StaticFiles(directory=str(SHARED_STATIC)), name="static")


class FailureOnPurpose(RuntimeError):
    """Raised by the route that fails on purpose (development stacks only)."""


def add_failing_route(app: FastAPI) -> None:
    """`POST /_test/fail` answers 500, as any unexpected failure does: development stacks only, for the test that
    proves a failure never spills onto the next requests (no input of a client's makes a service fail)."""

    @app.post("/_test/fail", include_in_schema=False)
    async def fail() -> None:
        raise FailureOnPurpose("failing on purpose (GROUNDSWELL_TEST_FAILURES)")


async def client_ip(request: Request) -> str:
    """The client's address, as `shared/client_address.py` resolved it (proxy headers only from trusted proxies)."""
    return request.client.host if request.client else "unknown"
