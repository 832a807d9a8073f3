"""Run handlers (`EventConsumer.on_run`): consecutive events of one type in a fetched batch are applied together,
with the same effects, in the same per-subject order, as their one-by-one handler; a run that fails is handled
again one event at a time, each event once."""

from __future__ import annotations

import asyncio
import uuid

from faststream.kafka import KafkaBroker
from sqlalchemy import text

from deploy.local import launcher
from shared.config import Settings
from shared.consumer import DeadLetterPublisher, EventConsumer
from shared.events.catalog import MemberConfirmed, MemberLeft
from shared.events.envelope import Envelope
from shared.inbox import Inbox
from shared.outbox import Outbox
from shared.uow import UnitsOfWork
from tests.support.kafka import produce

EFFECTS_SQL = (
    "CREATE TABLE IF NOT EXISTS effects (seq bigserial PRIMARY KEY, event_id text NOT NULL, member_id text NOT NULL, "
    "what text NOT NULL, via text NOT NULL)"
)
READ_SQL = text("SELECT event_id, member_id, what, via FROM effects ORDER BY seq")


def _confirmed(member: str) -> Envelope:
    return Envelope.wrap(MemberConfirmed(member_id=member, confirmed_at="2026-11-22T10:00:00Z"))


def _left(member: str) -> Envelope:
    return Envelope.wrap(MemberLeft(member_id=member))


async def _run_consumer(scratch_db, scratch_topics, envelopes: list[Envelope], *, failing_member: str | None = None):
    """Produce `envelopes` (keyed by subject, one partition), then consume them with a run handler for
    MemberConfirmed; return (effects in order, the runs the run handler was given)."""
    db, tables = scratch_db
    async with db.engine.begin() as conn:
        await conn.execute(text(EFFECTS_SQL))
    run_id = uuid.uuid4().hex[:8]
    topic, group = f"test.runs.{run_id}", f"test-runs-{run_id}"
    await scratch_topics(topic, partitions=1)
    consumer = EventConsumer.for_group(group, (topic,))
    runs: list[list[str]] = []
    insert = text("INSERT INTO effects (event_id, member_id, what, via) VALUES (:e, :m, :w, :v)")

    @consumer.on(MemberConfirmed)
    async def confirmed(uow, envelope, event) -> None:
        session = uow.session
        await session.execute(insert, {"e": str(envelope.event_id), "m": event.member_id, "w": "confirmed", "v": "one"})

    @consumer.on_run(MemberConfirmed)
    async def confirmed_run(uow, run) -> None:
        session = uow.session
        runs.append([event.member_id for _, event in run])
        rows = [{"e": str(env.event_id), "m": event.member_id, "w": "confirmed", "v": "run"} for env, event in run]
        await session.execute(insert, rows)
        if failing_member in runs[-1]:
            raise RuntimeError("the run's statement failed")

    @consumer.on(MemberLeft)
    async def left(uow, envelope, event) -> None:
        session = uow.session
        await session.execute(insert, {"e": str(envelope.event_id), "m": event.member_id, "w": "left", "v": "one"})

    for envelope in envelopes:
        await produce(topic, envelope.to_bytes(), key=envelope.subject_id.encode())
    broker = KafkaBroker(launcher.KAFKA_BOOTSTRAP)
    dlq = DeadLetterPublisher(launcher.KAFKA_BOOTSTRAP, "test-runs")
    consumer.attach(broker, Inbox(db, tables.inbox), UnitsOfWork(db, Outbox(tables.outbox)), dlq,
                    Settings(service_name="test", consumer_retry_backoff_s=0.05))
    await broker.start()
    try:
        for _ in range(300):
            async with db.engine.connect() as conn:
                effects = (await conn.execute(READ_SQL)).all()
            if len(effects) >= len(envelopes):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # nothing more comes
        async with db.engine.connect() as conn:
            effects = (await conn.execute(READ_SQL)).all()
    finally:
        await broker.stop()
        await dlq.stop()
    return effects, runs


def _history() -> list[Envelope]:
    # m1 confirms, leaves and confirms again (three events of one subject, in this order); others confirm once.
    return [
        _confirmed("m1"),
        _confirmed("m2"),
        _left("m1"),
        _confirmed("m3"),
        _confirmed("m1"),
        _confirmed("m4"),
        _left("m5"),
        _confirmed("m6"),
        _confirmed("m7"),
    ]


async def test_runs_apply_each_event_once_in_each_subjects_order(scratch_db, scratch_topics):
    history = _history()
    effects, runs = await _run_consumer(scratch_db, scratch_topics, history)

    assert sorted(e.event_id for e in effects) == sorted(str(env.event_id) for env in history)  # each once
    for member in ("m1", "m2", "m3", "m4", "m5", "m6", "m7"):
        wanted = [str(env.event_id) for env in history if env.subject_id == member]
        assert [e.event_id for e in effects if e.member_id == member] == wanted, member
    assert [e.what for e in effects if e.member_id == "m1"] == ["confirmed", "left", "confirmed"]
    assert all(len(run) == len(set(run)) for run in runs), runs  # a subject at most once in a run
    assert max(len(run) for run in runs) > 1, runs  # the batch did go through the run handler
    assert {e.via for e in effects if e.what == "confirmed"} == {"run"}


async def test_a_failing_run_is_handled_again_one_event_at_a_time(scratch_db, scratch_topics):
    history = _history()
    effects, runs = await _run_consumer(scratch_db, scratch_topics, history, failing_member="m6")

    assert any("m6" in run for run in runs)
    assert sorted(e.event_id for e in effects) == sorted(str(env.event_id) for env in history)  # each once
    for member in ("m1", "m2", "m3", "m4", "m5", "m6", "m7"):
        wanted = [str(env.event_id) for env in history if env.subject_id == member]
        assert [e.event_id for e in effects if e.member_id == member] == wanted, member
    # The failed batch's transaction rolled back: m6 and m7 were stored by the one-by-one handler only.
    assert {e.via for e in effects if e.member_id in ("m6", "m7")} == {"one"}
