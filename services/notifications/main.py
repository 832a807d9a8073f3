"""Notifications' composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifications import db as tables
from services.notifications.consumers import build_consumers
from services.notifications.mailer import Mailer
from services.notifications.service import DeliveryWorker, NotificationService
from shared import topics
from shared.runtime import ServiceRuntime

NAME = "notifications"


def create_app() -> FastAPI:
    runtime = ServiceRuntime(NAME, tables.delivery)
    service = NotificationService(runtime.db, runtime.outbox, runtime.settings)
    for consumer in build_consumers(service):
        runtime.add_consumer(consumer)
    runtime.document_publisher(topics.NOTIFICATIONS_DELIVERIES, "Notifications sent or failed")
    worker = DeliveryWorker(runtime.db, runtime.outbox, Mailer(runtime.settings), service.deliveries_queued)
    runtime.add_background(worker.run)
    app = runtime.build_app("Groundswell notifications")
    app.state.notifications = service
    return app
