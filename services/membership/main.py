"""Membership's composition root: wires the runtime, the service layer and the entrypoints."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.membership import db as tables
from services.membership import web
from services.membership.service import MembershipService
from shared import topics
from shared.runtime import ServiceRuntime
from shared.web import make_templates

NAME = "membership"
HERE = Path(__file__).parent


def create_app() -> FastAPI:
    runtime = ServiceRuntime(NAME, tables.delivery)
    settings = runtime.settings
    runtime.document_publisher(topics.MEMBERSHIP_MEMBERS, "Members joining, confirming, updating, leaving, erased")
    runtime.document_publisher(topics.MEMBERSHIP_SUBJECT_KEYS, "Per-member data keys (compacted; tombstone on erasure)")
    app = runtime.build_app("Groundswell membership", routers=[web.router])
    app.state.membership = MembershipService(
        runtime.db, runtime.outbox, settings.secret_key, double_opt_in=settings.double_opt_in
    )
    app.state.templates = make_templates(
        HERE / "templates", {"network_name": settings.network_name, "service": NAME}
    )
    return app
