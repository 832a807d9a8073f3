"""Prometheus metrics every service exposes at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PUBLISHED = Counter("groundswell_events_published_total", "Events published to Kafka", ["service", "topic"])
EVENTS_CONSUMED = Counter(
    "groundswell_events_consumed_total", "Events handled by a consumer", ["service", "consumer", "outcome"]
)
EVENTS_RETRIED = Counter("groundswell_events_retried_total", "Handler attempts retried", ["service", "consumer"])
EVENTS_DEAD_LETTERED = Counter(
    "groundswell_events_dead_lettered_total", "Events sent to a dead-letter topic", ["service", "consumer"]
)
OUTBOX_BACKLOG = Gauge("groundswell_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "groundswell_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", ["service"]
)
CONSUMER_LAG = Gauge(
    "groundswell_consumer_lag",
    "Messages behind the end of the partition",
    ["service", "consumer", "topic", "partition"],
)
READY = Gauge(
    "groundswell_ready",
    "1 when a dependency answers the service (database, kafka), 0 when it does not; set at each scrape",
    ["service", "dependency"],
)
HTTP_REQUESTS = Histogram(
    "groundswell_http_request_seconds", "HTTP request duration", ["service", "method", "route", "status"]
)
EMAILS_SENT = Counter("groundswell_emails_sent_total", "Emails accepted by the SMTP relay", ["service", "kind"])
EMAILS_FAILED = Counter(
    "groundswell_emails_failed_total", "Emails the SMTP relay refused", ["service", "kind", "permanent"]
)
