"""The HTTP side every service shares: request ids, health, readiness, metrics, templates (and the filters every
page may use), static files."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics, tracing
from shared.logging import correlation_id_var

SHARED_TEMPLATES = Path(__file__).parent / "templates"
SHARED_STATIC = Path(__file__).parent / "static"
REQUEST_ID_HEADER = "x-request-id"
NETWORK_TIMEZONE = "Europe/London"


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


def make_templates(service_templates: Path | None, globals_: dict[str, Any] | None = None) -> Jinja2Templates:
    loaders = [FileSystemLoader(str(service_templates))] if service_templates else []
    loaders.append(FileSystemLoader(str(SHARED_TEMPLATES)))
    env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(["html", "xml"]))
    env.globals.update(globals_ or {})
    env.filters["local_time"] = local_time
    return Jinja2Templates(env=env)


def local_time(value: datetime | None, zone: str = NETWORK_TIMEZONE, fmt: str = "long") -> str:
    """A time as people in `zone` read it: `Thursday 4 March 2027, 6:30pm` (`fmt` "time": `6:30pm`; "input":
    the value of an `<input type="datetime-local">`)."""
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(zone or NETWORK_TIMEZONE))
    clock = local.strftime("%I:%M%p").lstrip("0").lower().replace(":00", "")
    if fmt == "time":
        return clock
    if fmt == "input":  # seconds only when there are some, so nothing is lost
        return local.strftime("%Y-%m-%dT%H:%M:%S" if local.second else "%Y-%m-%dT%H:%M")
    return f"{local.strftime('%A')} {local.day} {local.strftime('%B %Y')}, {clock}"


def add_operational_routes(app: FastAPI, service: str, readiness: Any) -> None:
    """`/healthz` (the process is alive), `/readyz` (its dependencies answer), `/metrics`, shared static files."""

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
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount(f"/static/{service}", StaticFiles(directory=str(SHARED_STATIC)), name="static")


def client_ip(request: Request) -> str:
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"
