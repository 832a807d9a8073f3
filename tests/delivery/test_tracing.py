"""The request id follows a join everywhere it goes, and every service reports its delivery metrics."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from deploy.local import launcher
from shared.events.envelope import Envelope
from shared.topics import MEMBERSHIP_MEMBERS, NOTIFICATIONS_DELIVERIES
from tests.support.joins import member_ids
from tests.support.kafka import wait_for_records
from tests.support.people import unique_email


async def test_request_id_becomes_the_correlation_id_of_every_downstream_event(
    gateway, mail, membership_db, notifications_db
):
    request_id = f"trace-{uuid.uuid4().hex}"
    email = unique_email("traced")
    response = await gateway.post(
        "/join",
        data={"name": "Trace Me", "email": email, "postcode": "B1 1AA", "email_consent": "yes"},
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 303 and response.headers["x-request-id"] == request_id
    await mail.wait_for(email)
    member_id = (await member_ids(membership_db, [email]))[email]

    [joined] = await wait_for_records(MEMBERSHIP_MEMBERS, lambda r: r.key.decode() == member_id, count=1)
    assert Envelope.from_bytes(joined.value).correlation_id == request_id
    assert await notifications_db.fetchval(
        "SELECT correlation_id FROM deliveries WHERE kind = 'welcome' AND recipient_id = $1", member_id
    ) == request_id
    [sent] = await wait_for_records(NOTIFICATIONS_DELIVERIES, lambda r: r.key.decode() == member_id, count=1)
    sent_envelope = Envelope.from_bytes(sent.value)
    assert sent_envelope.type == "NotificationSent" and sent_envelope.correlation_id == request_id


async def test_every_service_exposes_delivery_metrics(system):
    wanted = [
        "groundswell_events_published_total",
        "groundswell_outbox_backlog",
        "groundswell_outbox_oldest_age_seconds",
    ]
    consuming = {"notifications", "events", "campaigns", "membership"}
    async with httpx.AsyncClient(timeout=10) as client:
        for service, port in launcher.SERVICE_PORTS.items():
            if not launcher.service_ready(service):
                continue
            text = ""
            for _ in range(40):  # the lag gauge appears after the first measurement
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                if service not in consuming or "groundswell_consumer_lag{" in text:
                    break
                await asyncio.sleep(0.5)
            for name in wanted:
                assert name in text, f"{service} lacks {name}"
            if service in consuming:
                assert "groundswell_events_consumed_total{" in text and "groundswell_consumer_lag{" in text, service


def test_a_consumer_reports_its_counters_at_zero_before_its_first_event():
    """A new consumer's series exist from the start (an alert on dead letters sees 0, not "no data")."""
    from faststream.kafka import KafkaBroker
    from prometheus_client import generate_latest

    from shared.config import Settings
    from shared.consumer import DeadLetterPublisher, EventConsumer

    group = f"test-zero-{uuid.uuid4().hex[:8]}"
    consumer = EventConsumer.for_group(group, ("test.zero",))
    dlq = DeadLetterPublisher("127.0.0.1:1", "t")
    consumer.attach(KafkaBroker("127.0.0.1:1"), None, None, dlq, Settings(service_name="z"))  # nothing is consumed
    text = generate_latest().decode()
    for outcome in ("handled", "duplicate", "ignored", "dead_lettered"):
        assert f'groundswell_events_consumed_total{{consumer="{group}",outcome="{outcome}",service="z"}} 0.0' in text
    assert f'groundswell_events_dead_lettered_total{{consumer="{group}",service="z"}} 0.0' in text
