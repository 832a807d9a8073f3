"""A rolling upgrade with joins flowing (docs/operations.md, "Upgrades without downtime"): two instances of every
service behind the gateway, each drained, stopped and started again from the code on disk by `make roll`'s code,
one instance of each service at a time, so old and new processes serve side by side for a moment. Nothing is
refused, nothing is lost, nobody is welcomed twice."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from deploy.local import launcher, rolling
from tests.support.inprocess import poll
from tests.support.joins import join, wait_for_welcomes
from tests.support.people import unique_email

pytestmark = pytest.mark.fault

EXTRA = "b"


@pytest.fixture
def two_of_each(system: None):
    """A second instance of every service on the port GROUNDSWELL_INSTANCES gives it, in the gateway's upstreams."""
    extra = [(name, launcher.SERVICE_PORTS[name] + 100) for name in launcher.SERVICES]
    for name, port in extra:
        launcher.start_service(name, instance=EXTRA, port=port)
    try:
        for name, _ in extra:
            assert launcher.service_ready(name, 90, instance=EXTRA), launcher.log_tail(f"{name}-{EXTRA}")
        launcher.reload_gateway()
        yield
    finally:
        for name, _ in extra:
            launcher.stop_service(name, EXTRA, signal.SIGTERM, 30)
        launcher.reload_gateway()
        for name in launcher.SERVICES:  # the suite goes on with the main instances, whatever happened above
            assert launcher.service_ready(name, 90), launcher.log_tail(name)


def pids() -> dict[str, int]:
    found = {}
    for name in launcher.SERVICES:
        for proc_name in launcher.service_instances(name):
            record = launcher.read_record(proc_name)
            if record is not None:
                found[proc_name] = record.pid
    return found


async def test_every_instance_is_replaced_while_joins_flow_and_every_join_is_accepted_stored_and_welcomed_once(
    gateway, membership_db, mail, two_of_each
):
    before = pids()
    assert len(before) == 2 * len(launcher.SERVICES)
    since = await mail.mark()
    answers: dict[str, int] = {}
    rolled = asyncio.Event()

    # Each join on a connection of its own, as different people's browsers make them. A reload of the gateway
    # closes its old workers' idle keep-alive connections; a request sent on one in that instant meets the close
    # (httpx raises ReadError, as a loaded CI run saw), which browsers answer by sending the request again on a
    # new connection. What this test asks of Groundswell is that every join reaching it is taken.
    people = httpx.AsyncClient(base_url=str(gateway.base_url), timeout=gateway.timeout,
                               limits=httpx.Limits(max_keepalive_connections=0))

    async def steady_joins() -> None:  # three at a time, about ten a second, until the roll is over and a bit
        while not rolled.is_set():
            batch = [unique_email("rolling") for _ in range(3)]
            answers.update(zip(batch, await asyncio.gather(*(join(people, e) for e in batch)), strict=True))
            await asyncio.sleep(0.2)
        for _ in range(5):
            batch = [unique_email("rolling") for _ in range(3)]
            answers.update(zip(batch, await asyncio.gather(*(join(people, e) for e in batch)), strict=True))

    flowing = asyncio.create_task(steady_joins())
    await asyncio.sleep(1)
    steps: list[str] = []
    try:
        await asyncio.to_thread(rolling.roll, launcher.SERVICES, progress=steps.append)
    finally:
        rolled.set()
        try:
            await flowing
        finally:
            await people.aclose()

    after = pids()
    assert set(after) == set(before), "the roll left a different set of instances running"
    assert all(after[n] != before[n] for n in before), f"not every instance was replaced: {before} -> {after}"
    assert len(steps) == 2, steps  # two instances each: no temporary third one, two steps of all four services
    refused = {e: a for e, a in answers.items() if a != 303}
    assert not refused, f"{len(refused)} of {len(answers)} joins were refused during the roll: {set(refused.values())}"

    emails = list(answers)
    rows = await membership_db.fetch(
        "SELECT email_normalised, count(*) AS n FROM members WHERE email_normalised = ANY($1) GROUP BY 1", emails
    )
    assert {r["email_normalised"]: r["n"] for r in rows} == dict.fromkeys(emails, 1), "a join was lost or doubled"
    welcomes = await wait_for_welcomes(mail, emails, since=since)
    await asyncio.sleep(3)  # a second copy would come from a handler run again after an instance stopped
    welcomes = await wait_for_welcomes(mail, emails, since=since)
    assert welcomes == dict.fromkeys(emails, 1), "someone was not welcomed, or welcomed twice"

    async def outbox_empty() -> bool:
        return await membership_db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

    await poll(outbox_empty, timeout=60, interval=0.25)  # raises if the outbox keeps rows after the roll


def test_a_service_with_one_instance_gets_a_temporary_second_one_so_one_always_serves(monkeypatch):
    """The plan for a single instance: surge, replace, then stop the surge (the steps are what `make roll` says)."""
    events: list[tuple[str, object]] = []
    monkeypatch.setattr(rolling, "instances_of", lambda name: [("", 1)] if name == "events" else [])
    monkeypatch.setattr(rolling, "_start_and_wait", lambda pool, items: events.append(("start", items)))
    monkeypatch.setattr(rolling, "_stop", lambda pool, items: events.append(("stop", items)))
    monkeypatch.setattr(rolling, "_drain", lambda items: events.append(("drain", items)))
    monkeypatch.setattr(rolling, "reload_gateway", lambda: True)

    rolling.roll(["events"], progress=lambda _: None)

    assert events == [
        ("start", [("events", rolling.SURGE, None)]),
        ("drain", [("events", "")]),
        ("stop", [("events", "")]),
        ("start", [("events", "", 1)]),
        ("drain", [("events", rolling.SURGE)]),
        ("stop", [("events", rolling.SURGE)]),
    ]
