"""Saving the engagement ladder on the running system: in force at once, the members moved in the background with
the page showing how far it has got and then the result; the campaigns service killed in the middle finishes after
its restart with every member at the right level and each move published once; bad input and organisers below the
network change nothing.

These use the launcher's stack (gateway, the campaigns service and its database), like tests/delivery's faults.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local import launcher
from shared import topics
from shared.events.envelope import Envelope
from tests.support.inprocess import asyncpg_dsn
from tests.support.kafka import KafkaWatcher
from tests.support.organisers import organiser_headers

LADDER_API = "/campaigns/api/engagement/ladder"
LADDER_PAGE = "/campaigns/organise/ladder"
NETWORK = organiser_headers("network")
CHUNK = 20  # LADDER_MOVE_CHUNK of the campaigns service restarted for the test: many chunks for a few hundred
N = 300


def stricter(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ladder with its second level needing one more action or meeting than now."""
    return [{**r, "min_total": r["min_total"] + 1} if i == 1 else r for i, r in enumerate(levels)]


def form_of(levels: list[dict[str, Any]]) -> dict[str, str]:
    form = {"levels": str(len(levels))}
    for i, r in enumerate(levels):
        form.update({f"level-{i}": r["level"], f"label-{i}": r["label"], f"min_actions-{i}": str(r["min_actions"]),
                     f"min_attended-{i}": str(r["min_attended"]), f"min_total-{i}": str(r["min_total"]),
                     f"roles-{i}": ", ".join(r["roles"])})
    return form


async def ladder_state(gateway: httpx.AsyncClient) -> dict[str, Any]:
    answer = await gateway.get(LADDER_API, headers=NETWORK)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def until_moved(gateway: httpx.AsyncClient, timeout: float = 180.0) -> dict[str, Any]:
    for _ in range(int(timeout * 4)):
        state = await ladder_state(gateway)
        if state["change"] is None or state["change"]["status"] != "moving":
            return state
        await asyncio.sleep(0.25)
    raise AssertionError(f"the ladder's moves did not finish: {state['change']}")


def restart_campaigns(env: dict[str, str] | None = None, *, kill: bool = False) -> None:
    if kill:
        launcher.kill_service("campaigns")
    else:
        launcher.stop_service("campaigns")
    launcher.start_service("campaigns", env=env)
    assert launcher.service_ready("campaigns", 90), launcher.log_tail("campaigns")


@pytest.fixture
async def ladder_restored(gateway: httpx.AsyncClient) -> AsyncIterator[list[dict[str, Any]]]:
    """The ladder as it was, put back (and its moves finished) after the test."""
    await until_moved(gateway)
    before = (await ladder_state(gateway))["levels"]
    yield before
    restored = await gateway.put(LADDER_API, headers=NETWORK, json={"levels": before})
    assert restored.status_code in (200, 202), restored.text
    await until_moved(gateway)


@pytest.mark.fault
async def test_a_campaigns_service_killed_while_moving_members_finishes_after_restart_each_move_published_once(
    gateway, campaigns_db, ladder_restored
):
    before = ladder_restored
    run = uuid.uuid4().hex[:8]
    ours = [f"ladderjob-{run}-{i:04d}" for i in range(N)]
    # One action each: at the second level now; the stricter ladder puts them back at the first.
    await campaigns_db.executemany(
        "INSERT INTO members (member_id, status, actions, attended, level, level_since) "
        "VALUES ($1, 'active', 1, 0, $2, '2020-01-01')", [(m, before[1]["level"]) for m in ours])
    ordered = [r["member_id"] for r in await campaigns_db.fetch(
        "SELECT member_id FROM members WHERE member_id = ANY($1::varchar[]) ORDER BY member_id", ours)]
    held = ordered[N // 2]  # a consumer counting a fact for them holds their row: the moves wait there
    watcher = KafkaWatcher((topics.CAMPAIGNS_ENGAGEMENT,))
    await watcher.start()
    blocker = await campaigns_db_connection()
    try:
        restart_campaigns({"LADDER_MOVE_CHUNK": str(CHUNK)})
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM members WHERE member_id = $1 FOR UPDATE", held)

        new = stricter(before)
        saved = await gateway.put(LADDER_API, headers=NETWORK, json={"levels": new})
        assert saved.status_code == 202, saved.text  # in force, the rest moving in the background
        assert saved.json()["change"]["status"] == "moving"
        assert [r["min_total"] for r in (await ladder_state(gateway))["levels"]] == [r["min_total"] for r in new]

        # The background loop moves chunk after chunk up to the held member, and waits there.
        for _ in range(120):
            moved = await campaigns_db.fetchval(
                "SELECT count(*) FROM members WHERE member_id = ANY($1::varchar[]) AND level = $2", ours,
                new[0]["level"])
            if moved >= N // 2 - CHUNK:
                break
            await asyncio.sleep(0.5)
        assert N // 2 - CHUNK <= moved <= N // 2, moved
        change = (await ladder_state(gateway))["change"]
        assert change["status"] == "moving" and change["members_moved"] < change["members_to_move"]
        page = await gateway.get(LADDER_PAGE, headers=NETWORK)
        progress = re.search(r"Moving members to their new levels: ([\d,]+) of ([\d,]+) moved", page.text)
        assert progress is not None, page.text
        shown = [int(g.replace(",", "")) for g in progress.groups()]
        assert shown == [change["members_moved"], change["members_to_move"]] and 0 < shown[0] < shown[1]
        assert "<progress" in page.text

        restart_campaigns(kill=True)  # SIGKILL in the middle of a chunk: it is rolled back whole
        await tx.rollback()  # the consumer commits; the restarted service's loop resumes from the cursor
        done = (await until_moved(gateway))["change"]
        assert done["status"] == "done" and done["members_moved"] >= N
        page = await gateway.get(LADDER_PAGE, headers=NETWORK)
        result = re.search(r"([\d,]+) members changed level with the ladder saved", page.text)
        assert result is not None and int(result.group(1).replace(",", "")) == done["members_moved"], page.text

        levels = {r["member_id"]: r["level"] for r in await campaigns_db.fetch(
            "SELECT member_id, level FROM members WHERE member_id = ANY($1::varchar[])", ours)}
        assert set(levels.values()) == {new[0]["level"]}
        outbox = await campaigns_db.fetch(
            "SELECT key, event_id FROM outbox WHERE event_type = 'EngagementLevelChanged' AND key = ANY($1::text[])",
            ours)
        assert sorted(r["key"] for r in outbox) == sorted(ours)  # one move each, written once
        ours_set = set(ours)
        for _ in range(240):  # up to 60 s
            on_kafka = watcher.envelopes(lambda e: e.type == "EngagementLevelChanged" and e.subject_id in ours_set)
            if {e.subject_id for e in on_kafka} == ours_set:
                break
            await asyncio.sleep(0.25)
        # On Kafka, one event each (the relay may carry a record twice after a kill: the same event id, which
        # consumers drop; docs/delivery-guarantees.md).
        by_member: dict[str, set[uuid.UUID]] = {}
        for e in on_kafka:
            by_member.setdefault(e.subject_id, set()).add(e.event_id)
        assert {m: len(ids) for m, ids in by_member.items()} == dict.fromkeys(ours, 1)
        assert {e.event_id for e in on_kafka} == {r["event_id"] for r in outbox}
        assert all(e.data["reason"] == "the ladder changed" for e in on_kafka if isinstance(e, Envelope))
    finally:
        await watcher.stop()
        await blocker.close()
        await campaigns_db.execute("DELETE FROM members WHERE member_id = ANY($1::varchar[])", ours)
        restart_campaigns()


async def campaigns_db_connection() -> asyncpg.Connection:
    """A connection of its own to the stack's campaigns database (the consumer holding a member's row)."""
    return await asyncpg.connect(asyncpg_dsn(launcher.database_url("campaigns")))


async def test_bad_ladders_are_refused_with_a_clear_error_and_change_nothing(gateway, campaigns_db, ladder_restored):
    before = ladder_restored
    changes = await campaigns_db.fetchval("SELECT count(*) FROM ladder_changes")
    good = form_of(before)
    bad_forms = {
        "Thresholds can be at most 1,000,000": {**good, "min_actions-1": "99999999999"},
        "Each level needs a name and whole numbers for its thresholds": {**good, "min_total-1": "two"},
        "Thresholds cannot be negative": {**good, "min_attended-1": "-1"},
        "Names of levels can be at most 80 characters": {**good, "label-1": "x" * 81, "level-1": ""},
        "Each level must have its own name": {**good, "label-1": before[0]["label"], "level-1": before[0]["level"]},
        "Give at least two levels": {**good, "levels": "not a number"},
        "The first level is where everyone starts": {**good, "min_total-0": "1"},
    }
    for message, form in bad_forms.items():
        for confirm in ({}, {"confirm": "yes"}):
            refused = await gateway.post(LADDER_PAGE, data={**form, **confirm}, headers=NETWORK)
            assert refused.status_code == 422 and message in refused.text, (message, refused.status_code)
            assert 'class="error-summary"' in refused.text or "error-message" in refused.text
    api_refused = await gateway.put(LADDER_API, headers=NETWORK, json={"levels": [
        {"level": "a"}, {"level": "b", "min_total": 2**40}]})
    assert api_refused.status_code == 422 and "at most 1,000,000" in api_refused.text
    not_a_list = await gateway.put(LADDER_API, headers=NETWORK, json={"levels": "everyone"})
    assert not_a_list.status_code == 422
    assert (await ladder_state(gateway))["levels"] == before
    assert await campaigns_db.fetchval("SELECT count(*) FROM ladder_changes") == changes


async def test_only_a_network_organiser_saves_the_ladder_others_see_it_and_its_progress(
    gateway, campaigns_db, ladder_restored
):
    before = ladder_restored
    changes = await campaigns_db.fetchval("SELECT count(*) FROM ladder_changes")
    new = form_of(stricter(before))
    for scope in (("region", "some-region"), ("group", "some-group"), ("subteam", "some-subteam")):
        them = organiser_headers(*scope)
        assert (await gateway.post(LADDER_PAGE, data={**new, "confirm": "yes"}, headers=them)).status_code == 403
        assert (await gateway.put(LADDER_API, headers=them, json={"levels": stricter(before)})).status_code == 403
        page = await gateway.get(LADDER_PAGE, headers=them)
        assert page.status_code == 200 and "Only network organisers change the ladder" in page.text
        assert "Save the ladder" not in page.text
    assert (await gateway.post(LADDER_PAGE, data={**new, "confirm": "yes"})).status_code in (401, 303, 403)
    assert (await ladder_state(gateway))["levels"] == before
    assert await campaigns_db.fetchval("SELECT count(*) FROM ladder_changes") == changes

    saved = await gateway.post(LADDER_PAGE, data={**new, "confirm": "yes"}, headers=NETWORK)
    assert saved.status_code == 200 and "The ladder is saved" in saved.text
    assert (await ladder_state(gateway))["levels"] == stricter(before)
    await until_moved(gateway)
    page = await gateway.get(LADDER_PAGE, headers=organiser_headers("region", "some-region"))
    assert re.search(r"[\d,]+ members? changed level with the ladder saved", page.text), page.text
