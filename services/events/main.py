"""The events service's composition root: wires the runtime, the service layer and the entrypoints."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.events import api, calendar, organise, osdi, views, web
from services.events import db as tables
from services.events.consumers import MEMBERS_GROUP, REVOCATIONS_GROUP, build_registry
from services.events.reminders import ReminderLoop
from services.events.service import EventsService
from shared import topics
from shared.config import Settings
from shared.osdi import install_error_bodies
from shared.runtime import ServiceRuntime
from shared.web import make_templates

NAME = "events"
HERE = Path(__file__).parent


def create_app(
    settings: Settings | None = None,
    *,
    members_group: str = MEMBERS_GROUP,
    revocations_group: str = REVOCATIONS_GROUP,
    reminder_poll_interval_s: float = 5.0,
) -> FastAPI:
    """The service's app; tests pass their own settings, consumer group and a shorter reminder poll."""
    runtime = ServiceRuntime(NAME, tables.delivery, settings)
    settings = runtime.settings
    service = EventsService(
        runtime.uows, secret_key=settings.secret_key, public_base_url=settings.public_base_url
    )
    runtime.add_registry(build_registry(service.members, members_group, revocations_group))
    runtime.document_publisher(topics.EVENTS_MEETINGS, "Meetings scheduled, updated, cancelled; reminders due")
    runtime.document_publisher(topics.EVENTS_RSVPS, "RSVPs, cancellations, waitlist promotions, attendance")
    runtime.document_publisher(topics.EVENTS_SUBJECT_KEYS, "Per-RSVP data keys (compacted; tombstone on erasure)")
    runtime.document_publisher(topics.EVENTS_MEMBER_DATA, "A member's RSVPs, for their data download")
    runtime.add_background(ReminderLoop(service.reminders, reminder_poll_interval_s).run)
    runtime.add_background(service.limits.keep_pruned)
    app = runtime.build_app(
        "Groundswell events",
        routers=[organise.router, web.router, api.router, calendar.router, osdi.router],
    )
    app.state.events = service
    app.state.templates = make_templates(HERE / "templates", {"network_name": settings.network_name, "service": NAME})
    views.install_filters(app.state.templates)
    install_error_bodies(app)
    return app
