"""Two membership instances behind the gateway: it sends joins to both, and once one is killed (SIGKILL) every join
still goes through on the other, each member stored once (docs/scaling.md)."""

from __future__ import annotations

import asyncio

import pytest

from deploy.local import launcher
from tests.support.joins import join
from tests.support.people import unique_email

pytestmark = pytest.mark.fault

EXTRA = "b"


@pytest.fixture
def second_membership(system: None):
    """membership-b on the port GROUNDSWELL_INSTANCES gives it, in the gateway's upstream; gone again afterwards."""
    [(instance, port)] = [(EXTRA, launcher.SERVICE_PORTS["membership"] + 100)]
    launcher.start_service("membership", instance=instance, port=port)
    try:
        assert launcher.service_ready("membership", 90, instance=instance), launcher.log_tail("membership-b")
        launcher.reload_gateway()
        assert f"{launcher.HOST}:{port}" in (launcher.NGINX_DIR / "nginx.conf").read_text()
        yield port
    finally:
        launcher.kill_service("membership", instance=instance)
        launcher.reload_gateway()


def gateway_log_mentions(port: int, since: int) -> int:
    """How many requests the gateway passed to `port` in its log written after byte `since`."""
    with launcher.log_path("gateway").open("rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace").count(f"upstream={launcher.HOST}:{port}")


async def test_joins_go_on_through_the_other_instance_when_one_is_killed(gateway, membership_db, second_membership):
    log_start = launcher.log_path("gateway").stat().st_size
    before = [unique_email("twoinstances") for _ in range(40)]
    after = [unique_email("twoinstances") for _ in range(80)]

    answers_before = await asyncio.gather(*(join(gateway, e) for e in before))
    await asyncio.sleep(1.5)  # the gateway's log is written as answers leave
    assert answers_before == [303] * len(before)
    assert gateway_log_mentions(second_membership, log_start) > 0, "the gateway never used the second instance"

    # Joins in flight while the instance dies may fail (a POST the dead instance had received is never sent twice);
    # every join sent once it is dead must be accepted: connecting to it is refused, so the gateway tries the other.
    in_flight = [unique_email("twoinstances") for _ in range(40)]
    racing = asyncio.gather(*(join(gateway, e) for e in in_flight))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(launcher.kill_service, "membership", EXTRA)
    answers_in_flight = await racing
    answers_after = []
    for i in range(0, len(after), 10):  # a steady stream after the kill, ten at a time
        answers_after += await asyncio.gather(*(join(gateway, e) for e in after[i : i + 10]))

    assert answers_after == [303] * len(after)
    assert set(answers_in_flight) <= {303, 503}
    accepted = before + after + [e for e, a in zip(in_flight, answers_in_flight, strict=True) if a == 303]
    rows = await membership_db.fetch(
        "SELECT email_normalised, count(*) AS n FROM members WHERE email_normalised = ANY($1) GROUP BY 1",
        before + after + in_flight,
    )
    stored = {r["email_normalised"]: r["n"] for r in rows}
    assert all(stored.get(e) == 1 for e in accepted), "an accepted join was lost or stored twice"
    assert all(n == 1 for n in stored.values()), "a join was stored twice"
