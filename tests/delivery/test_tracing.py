"""A join is one trace from the form to notifications, its request id follows it everywhere it goes, and every
service reports its delivery metrics."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deploy.local import launcher
from shared import tracing
from shared.events.envelope import Envelope
from shared.logging import _add_trace
from shared.topics import MEMBERSHIP_MEMBERS, NOTIFICATIONS_DELIVERIES
from tests.support import otlp
from tests.support.joins import member_ids
from tests.support.kafka import wait_for_records
from tests.support.people import member_joined, unique_email


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


# Tracing ------------------------------------------------------------------------------------------------------------
@pytest.mark.fault  # restarts membership and notifications (the launcher's processes) with tracing on, then off
async def test_a_join_is_one_trace_from_the_form_through_the_relay_and_kafka_to_notifications(gateway, mail):
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    email = unique_email("traced")

    def complete(spans: list[otlp.CollectedSpan]) -> bool:
        return any(s.service == "notifications" and s.attributes.get("groundswell.event.type") == "MemberJoined"
                   for s in spans)  # fmt: skip

    with otlp.Collector() as collector, _services_exporting_to(collector.endpoint, ("membership", "notifications")):
        response = await gateway.post(
            "/join",
            data={"name": "Trace Me", "email": email, "postcode": "B1 1AA", "email_consent": "yes"},
            headers={"traceparent": f"00-{trace_id}-{caller}-01"},
        )
        assert response.status_code == 303
        await mail.wait_for(email)
        spans = await collector.wait_for(trace_id, complete)

    by_id = {s.span_id: s for s in spans}
    [request] = [s for s in spans if s.service == "membership" and s.kind == otlp.SERVER]
    assert request.parent_id == caller and request.attributes.get("http.route") == "/join"
    [handled] = [s for s in spans if s.service == "notifications" and s.kind == otlp.CONSUMER
                 and s.attributes.get("groundswell.event.type") == "MemberJoined"
                 and s.attributes.get("messaging.consumer.group.name") == "notifications"]  # fmt: skip
    sent = by_id[handled.parent_id]  # the relay's span, in membership
    assert (sent.service, sent.kind, sent.name) == ("membership", otlp.PRODUCER, f"publish {MEMBERSHIP_MEMBERS}")
    emitted = by_id[sent.parent_id]  # the use case's, when the outbox row was written
    assert emitted.kind == otlp.PRODUCER and "MemberJoined" in emitted.attributes["groundswell.event.types"]
    assert request.span_id in _ancestors(emitted, by_id)
    assert handled.attributes[tracing.CORRELATION_ATTRIBUTE] == response.headers["x-request-id"]


@contextmanager
def _services_exporting_to(endpoint: str, services: Sequence[str]) -> Iterator[None]:
    """The launcher's services, restarted to export their spans to `endpoint`; restarted as they were after."""
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false",
                 "OTEL_BSP_SCHEDULE_DELAY": "200"}  # fmt: skip
    try:
        for service in services:
            launcher.stop_service(service)
            launcher.start_service(service, env=exporting)
        for service in services:
            assert launcher.service_ready(service, 90), launcher.log_tail(service)
        yield
    finally:
        for service in services:
            launcher.stop_service(service)
            launcher.start_service(service)
        for service in services:
            assert launcher.service_ready(service, 90), launcher.log_tail(service)


def _ancestors(span: otlp.CollectedSpan, by_id: dict[str, otlp.CollectedSpan]) -> list[str]:
    found = []
    while span.parent_id:
        found.append(span.parent_id)
        if span.parent_id not in by_id:
            break
        span = by_id[span.parent_id]
    return found


def test_tracing_is_on_only_when_the_standard_variables_ask_for_an_exporter():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not tracing.wanted({})
    assert tracing.wanted(endpoint)
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"})


def test_with_tracing_off_outbox_rows_carry_no_trace_context():
    assert not tracing.enabled()  # this process never asked for it
    with tracing.emitting([_event()], [MEMBERSHIP_MEMBERS]) as headers:
        assert headers == [{}]


@dataclass
class Recorded:
    provider: TracerProvider
    tracer: trace.Tracer
    exporter: InMemorySpanExporter

    def finished(self, operation: str) -> list[ReadableSpan]:
        """The finished spans of one operation (`emit`, `publish`, `process`)."""
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(operation + " ")]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """Tracing on in this process, its spans kept in memory (the global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(tracing, "_tracer", tracer)
    monkeypatch.setattr(tracing, "_enabled", True)
    return Recorded(provider, tracer, exporter)


def test_a_batch_of_joins_emits_each_join_s_events_in_its_own_request_s_trace(recorded):
    """The join batcher stores several requests' joins in one transaction, from a task of the first request's."""
    first, second = recorded.tracer.start_span("POST /join"), recorded.tracer.start_span("POST /join")
    with trace.use_span(first), tracing.serving("request-1"), trace.use_span(second), tracing.serving("request-2"):
        with trace.use_span(first):  # the batcher's task was started by the first request
            events = [_event("request-2"), _event("request-1")]
            with tracing.emitting(events, [MEMBERSHIP_MEMBERS] * 2) as headers:
                pass

    assert [_trace_of(h) for h in headers] == [_ids(second)[0], _ids(first)[0]]
    emits = {s.attributes["messaging.message.id"]: s for s in recorded.finished("emit")}
    assert emits[str(events[0].event_id)].parent.span_id == second.get_span_context().span_id
    assert emits[str(events[1].event_id)].parent.span_id == first.get_span_context().span_id


def test_events_emitted_while_handling_a_batch_descend_from_the_event_that_caused_each(recorded):
    """A consumer handles a batch in one transaction; a run handler emits for many events at once."""
    causes = [_event(), _event()]
    senders = [recorded.tracer.start_span("publish"), recorded.tracer.start_span("publish")]
    records = [_record(sender) for sender in senders]
    with tracing.processing("group", list(zip(records, causes, strict=True))) as handling:
        effects = [_event(causation_id=str(c.event_id)) for c in reversed(causes)]
        with tracing.emitting(effects, [MEMBERSHIP_MEMBERS] * 2) as headers:
            pass
    processed = {s.attributes["messaging.message.id"]: s for s in recorded.finished("process")}

    assert [_trace_of(h) for h in headers] == [_ids(senders[1])[0], _ids(senders[0])[0]]
    for cause, sender in zip(causes, senders, strict=True):
        assert processed[str(cause.event_id)].parent.span_id == sender.get_span_context().span_id
    assert len(handling.spans) == 2


def test_the_relay_sends_each_row_in_a_child_of_its_emitter_and_passes_its_own_context_on(recorded):
    emitter = recorded.tracer.start_span("emit MemberJoined")
    fields = {"type": "MemberJoined", **_traceparent(emitter)}
    sends = tracing.sending("membership")
    sends.start(MEMBERSHIP_MEMBERS, fields)
    sends.finish([None])

    [sent] = recorded.finished("publish")
    assert sent.parent.span_id == emitter.get_span_context().span_id
    assert _ids_in(fields) == _ids(sent) and fields["type"] == "MemberJoined"


async def test_a_request_s_span_keeps_its_route_but_not_the_person_s_address_agent_or_token(recorded):
    app = FastAPI()

    @app.get("/events/rsvps/{token}")
    async def rsvp(token: str) -> dict[str, str]:
        return {}

    tracing.instrument_app(app, recorded.provider)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://groundswell.test") as client:
        await client.get("/events/rsvps/s3cret-token?email=someone@example.org", headers={"User-Agent": "Firefox/1"})

    [served] = [s for s in recorded.exporter.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert served.attributes["http.route"] == "/events/rsvps/{token}"
    recorded_text = repr(dict(served.attributes))
    for personal in ("203.0.113.9", "s3cret-token", "someone@example.org", "Firefox"):
        assert personal not in recorded_text


def test_log_lines_carry_the_current_trace(recorded):
    with recorded.tracer.start_as_current_span("work") as span:
        line = _add_trace(None, "info", {"event": "something happened"})
    trace_id, span_id = _ids(span)
    assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)
    assert "trace_id" not in _add_trace(None, "info", {"event": "outside any span"})


def _event(correlation_id: str | None = None, causation_id: str | None = None) -> Envelope:
    return Envelope.wrap(member_joined(str(uuid.uuid4())), correlation_id=correlation_id, causation_id=causation_id)


def _record(sender: Any) -> SimpleNamespace:
    headers = [(k, v.encode()) for k, v in _traceparent(sender).items()]
    return SimpleNamespace(topic=MEMBERSHIP_MEMBERS, partition=0, offset=1, headers=headers)


def _traceparent(span: Any) -> dict[str, str]:
    carrier: dict[str, str] = {}
    tracing.PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def _ids_in(headers: dict[str, str]) -> tuple[str, str]:
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    return trace_id, span_id


def _ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def _trace_of(headers: dict[str, str]) -> str:
    return _ids_in(headers)[0]

