"""Tracing (OpenTelemetry): one join is one trace, from the form through the outbox, the relay and Kafka to the
handlers that react to it.

Off unless the standard variables ask for it (an OTLP endpoint, or `OTEL_TRACES_EXPORTER=console`;
`OTEL_SDK_DISABLED=true` wins): then nothing is instrumented, no span is made and every helper here returns at
once. On, the W3C trace context travels with each event: written into its outbox row's headers when it is emitted
(`emitting`), carried by the relay's span that sends it (`sending`, a child of the emitter's), and read by the
consumer, which handles each record in a span that is a child of the relay's (`processing`).

Use cases and handlers that store several requests' or events' work in one transaction (the join batcher, run
handlers) still give each event its own parent: an event emitted while handling a batch descends from the span of
the event that caused it (its `causation_id`), and an event of a request still being served from that request's
span (its `correlation_id`), else from whatever span is current.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from shared.events.envelope import Envelope
from shared.logging import get_logger

log = get_logger(__name__)

# W3C trace context only: baggage (whatever a caller put in it) is not copied into the event log.
PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = frozenset(PROPAGATOR.fields)
CORRELATION_ATTRIBUTE = "groundswell.correlation_id"

# Operational routes are not traced (probes and scrapes would be most of the spans).
UNTRACED_URLS = "/healthz$,/readyz$,/metrics$,/static/"
# What the HTTP instrumentation records that may identify a person or hold a secret (the client's address, its
# user agent, a token in a path or a query string): overwritten before export; the route template stays.
_PERSONAL_HTTP_ATTRIBUTES = (
    "http.url", "http.target", "http.client_ip", "http.user_agent", "net.peer.ip", "net.sock.peer.addr",
    "url.full", "url.path", "url.query", "client.address", "network.peer.address", "user_agent.original",
)  # fmt: skip
_REDACTED = "[redacted]"

_tracer: trace.Tracer = trace.NoOpTracer()
_enabled = False
# The span serving each request now in flight, by its correlation id (the request id).
_serving: dict[str, SpanContext] = {}
# While a consumer handles a batch: the span processing each event, by event id.
_handling: ContextVar[Mapping[str, SpanContext] | None] = ContextVar("handling", default=None)


def enabled() -> bool:
    return _enabled


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard OTEL_* variables ask for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "console":
        return True
    return exporter == "otlp" and bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


class _NoOrphanQueries(Sampler):
    """A database query outside any request, event or job (a relay's poll, a sender's claim) starts no trace;
    everything else is decided by the configured sampler (OTEL_TRACES_SAMPLER, parent-based by default)."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"NoOrphanQueries{{{self.inner.get_description()}}}"


def configure_tracing(service: str, instance: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Set up the SDK, its exporter and the asyncpg instrumentation if `wanted`; once per process."""
    global _tracer, _enabled
    if _enabled or not wanted(environ):
        return _enabled
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": instance or service})
    )
    provider.sampler = _NoOrphanQueries(provider.sampler)  # before any tracer exists: each takes the sampler
    provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # parameters are never captured
    _tracer = provider.get_tracer("groundswell")
    _enabled = True
    log.info("tracing on", exporter=environ.get("OTEL_TRACES_EXPORTER", "otlp"))
    return True


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        return ConsoleSpanExporter()
    return OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION


def instrument_app(app: FastAPI, provider: trace.TracerProvider | None = None) -> None:
    """A server span for each request (continuing the caller's `traceparent`), if tracing is on."""
    if _enabled:
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls=UNTRACED_URLS, server_request_hook=_forget_the_person, exclude_spans=["receive", "send"],
            tracer_provider=provider,
        )  # fmt: skip


def _forget_the_person(span: Span, scope: MutableMapping[str, Any]) -> None:
    attributes = getattr(span, "attributes", None) or {}
    for key in _PERSONAL_HTTP_ATTRIBUTES:
        if key in attributes:
            span.set_attribute(key, _REDACTED)


# Requests ---------------------------------------------------------------------------------------------------------
@contextmanager
def _serving_request(correlation_id: str) -> Iterator[None]:
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid:  # an untraced route
        yield
        return
    span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
    _serving[correlation_id] = context
    try:
        yield
    finally:
        if _serving.get(correlation_id) is context:
            del _serving[correlation_id]


def serving(correlation_id: str) -> AbstractContextManager[None]:
    """While a request is served: what it emits, even from another task (a batcher's), descends from its span."""
    return _serving_request(correlation_id) if _enabled else nullcontext()


# Emitting (outbox rows) -------------------------------------------------------------------------------------------
_NO_HEADERS: dict[str, str] = {}


def _emitter(envelope: Envelope) -> SpanContext:
    handling = _handling.get()
    if handling is not None:
        cause = handling.get(envelope.causation_id or "")
    else:
        cause = _serving.get(envelope.correlation_id or "")
    return cause if cause is not None else trace.get_current_span().get_span_context()


@contextmanager
def _emit_spans(envelopes: Sequence[Envelope], topics: Sequence[str]) -> Iterator[list[dict[str, str]]]:
    by_parent: dict[tuple[int, int], tuple[SpanContext, list[int]]] = {}
    for i, envelope in enumerate(envelopes):
        parent = _emitter(envelope)
        by_parent.setdefault((parent.trace_id, parent.span_id), (parent, []))[1].append(i)
    headers: list[dict[str, str]] = [_NO_HEADERS] * len(envelopes)
    spans = []
    for parent, indices in by_parent.values():
        types = sorted({envelopes[i].type for i in indices})
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "create",
            "messaging.destination.name": ",".join(sorted({topics[i] for i in indices})),
            "groundswell.event.types": types,
        }
        if len(indices) == 1:
            attributes["messaging.message.id"] = str(envelopes[indices[0]].event_id)
            attributes[CORRELATION_ATTRIBUTE] = envelopes[indices[0]].correlation_id or ""
        else:
            attributes["messaging.batch.message_count"] = len(indices)
        span = _tracer.start_span(
            f"emit {types[0] if len(types) == 1 else f'{len(indices)} events'}",
            context=trace.set_span_in_context(NonRecordingSpan(parent)) if parent.is_valid else None,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
        spans.append(span)
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        for i in indices:
            headers[i] = carrier
    try:
        yield headers
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR)
        raise
    finally:
        for span in spans:
            span.end()


def emitting(envelopes: Sequence[Envelope], topics: Sequence[str]) -> AbstractContextManager[list[dict[str, str]]]:
    """While events are written to the outbox: the trace headers of each row (none when tracing is off), each
    event's from an "emit" span that is a child of its emitter's (see the module's docstring)."""
    if not _enabled:
        return nullcontext([_NO_HEADERS] * len(envelopes))
    return _emit_spans(envelopes, topics)


# Sending (the relay) ----------------------------------------------------------------------------------------------
class _Sends:
    """The relay's "publish" spans of one pass, one a row, each a child of the row's emitter."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.spans: list[Span] = []

    def start(self, topic: str, headers: dict[str, str]) -> None:
        """Start the row's span and put its context in the row's headers (in place of the emitter's)."""
        span = _tracer.start_span(
            f"publish {topic}",
            context=PROPAGATOR.extract(headers),
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "send",
                        "messaging.destination.name": topic, "groundswell.relay": self.service},
        )  # fmt: skip
        PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        self.spans.append(span)

    def finish(self, results: Sequence[object]) -> None:
        """End the spans with Kafka's answer for each row (an exception: it was not acknowledged)."""
        for span, result in zip(self.spans, results, strict=False):
            if isinstance(result, BaseException):
                span.record_exception(result)
                span.set_status(StatusCode.ERROR)
            span.end()
        self.spans = []


class _NoSends(_Sends):
    def start(self, topic: str, headers: dict[str, str]) -> None:
        pass

    def finish(self, results: Sequence[object]) -> None:
        pass


_NO_SENDS = _NoSends("")


def sending(service: str) -> _Sends:
    """The spans of one relay pass (do nothing when tracing is off)."""
    return _Sends(service) if _enabled else _NO_SENDS


# Processing (the consumer) ----------------------------------------------------------------------------------------
class _Processing:
    """The "process" spans of one batch of records, one an event, each a child of the span that sent it."""

    def __init__(self, group: str, items: Sequence[tuple[Any, Envelope]]) -> None:
        self.spans: dict[str, Span] = {}
        for record, envelope in items:
            self.spans[str(envelope.event_id)] = _tracer.start_span(
                f"process {record.topic}",
                context=PROPAGATOR.extract(_trace_headers(record.headers)),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": record.topic,
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                    "messaging.consumer.group.name": group,
                    "messaging.message.id": str(envelope.event_id),
                    "groundswell.event.type": envelope.type,
                    CORRELATION_ATTRIBUTE: envelope.correlation_id or "",
                },
            )
        self._token: Any = None
        self._current: AbstractContextManager[Any] = nullcontext()

    def __enter__(self) -> _Processing:
        self._token = _handling.set({event_id: span.get_span_context() for event_id, span in self.spans.items()})
        if len(self.spans) == 1:  # one event: its span is the current one (database spans, logs)
            self._current = trace.use_span(next(iter(self.spans.values())), end_on_exit=False)
            self._current.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._current.__exit__(exc_type, exc, tb)
        _handling.reset(self._token)
        for span in self.spans.values():
            if exc is not None:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR)
            span.end()

    async def __aenter__(self) -> _Processing:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def current(self, envelope: Envelope) -> AbstractContextManager[Any]:
        """Make the event's span the current one while its handler runs."""
        span = self.spans.get(str(envelope.event_id))
        return trace.use_span(span, end_on_exit=False) if span is not None else nullcontext()


class _NoProcessing(_Processing):
    def __init__(self) -> None:
        self.spans = {}

    def __enter__(self) -> _Processing:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        pass

    def current(self, envelope: Envelope) -> AbstractContextManager[Any]:
        return nullcontext()


_NO_PROCESSING = _NoProcessing()


def processing(group: str, items: Sequence[tuple[Any, Envelope]]) -> _Processing:
    """While a consumer group handles these (record, envelope) pairs in one transaction (nothing when off)."""
    return _Processing(group, items) if _enabled and items else _NO_PROCESSING


def _trace_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode("latin-1") for k, v in headers or () if k in TRACE_HEADERS}
