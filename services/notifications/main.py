"""Notifications' composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifications import db as tables
from services.notifications import web as organiser_web
from services.notifications.consumers import build_consumers
from services.notifications.delivery import DeliveryWorker
from services.notifications.fanout import AnnouncementFanOut
from services.notifications.letters import LetterNotifications
from services.notifications.meetings import MeetingNotifications
from services.notifications.service import NotificationService
from shared import topics
from shared.config import Settings
from shared.runtime import ServiceRuntime

NAME = "notifications"
RSVP_EMAIL_KINDS = ("rsvp_confirmation", "rsvp_promoted", "meeting_changed", "meeting_cancelled", "reminder")


def create_app(settings: Settings | None = None, *, group_suffix: str = "", loop_interval_s: float = 60.0) -> FastAPI:
    """The service's app. Tests pass their own settings, a suffix giving them consumer groups of their own,
    and a long pause between digest and follow-up passes (they run those passes themselves)."""
    runtime = ServiceRuntime(NAME, tables.delivery, settings)
    settings = runtime.settings
    service = NotificationService(runtime.db, runtime.outbox, settings)
    meetings = MeetingNotifications(service)
    letters = LetterNotifications(service)
    for consumer in build_consumers(service, meetings, letters):
        consumer.group += group_suffix
        runtime.add_consumer(consumer)
    runtime.document_publisher(topics.NOTIFICATIONS_DELIVERIES, "Notifications sent or failed")

    worker = DeliveryWorker(
        runtime.db, runtime.outbox, settings, service.deliveries_queued, connections=settings.smtp_connections
    )
    for kind in RSVP_EMAIL_KINDS:
        worker.attach_for(kind, meetings.ics_for_delivery)
    fanout = AnnouncementFanOut(service)
    runtime.add_background(worker.run)
    runtime.add_background(fanout.run)

    digests, follow_ups = organiser_web.install(
        runtime, service, group_suffix=group_suffix, loop_interval_s=loop_interval_s
    )

    app = runtime.build_app("Groundswell notifications", routers=organiser_web.ROUTERS)
    app.state.notifications = service
    organiser_web.attach(app, digests, follow_ups)
    return app
