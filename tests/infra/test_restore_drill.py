"""The restore drill (docs/operations.md, "Backups"): a separate stack builds a small network, is backed up, loses
every database and Kafka's data directory, and is restored from the backup; everything is back, the erased stay
erased (also one erased after the backup), the reporting read model rebuilt from the restored topics equals the
restored one, and a new join is welcomed exactly once while nobody is welcomed twice."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.second_stack import SecondStack

REPO = Path(__file__).resolve().parents[2]
OFFSET = int(os.environ.get("GROUNDSWELL_DRILL_PORT_OFFSET") or 9500)
SERVICES = ("membership", "events", "notifications", "campaigns")

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def drill(tmp_path_factory) -> Iterator[SecondStack]:
    stack = SecondStack(tmp_path_factory.mktemp("restore-drill"), OFFSET)
    try:
        stack.launcher("up")
        yield stack
    finally:
        stack.stop()


def messages_to(stack: SecondStack, address: str) -> list[dict]:
    answer = httpx.get(f"{stack.catcher}/api/messages", params={"to": address, "limit": 100}, timeout=10)
    return list(answer.json())


def wait_until(check, timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


async def test_a_lost_system_comes_back_from_its_backup(drill):
    tag = uuid.uuid4().hex[:6]
    people = {who: (f"{who.title()} Drill{tag}", f"{who}-{tag}@example.org")
              for who in ("alice", "bob", "carol", "frank")}  # fmt: skip
    client = httpx.AsyncClient(base_url=drill.gateway, timeout=30)
    organiser = await drill.organiser()

    # A small network: four joins, a meeting with an RSVP, a campaign with a signature, one erasure.
    for name, email in people.values():
        joined = await client.post("/join", data={"name": name, "email": email, "postcode": "B1 1AA",
                                                  "email_consent": "yes"})  # fmt: skip
        assert joined.status_code in (200, 303), joined.text
    wait_until(lambda: all(messages_to(drill, e) for _, e in people.values()), what="four welcomes")
    start = (datetime.now(UTC) + timedelta(days=9)).replace(microsecond=0)
    meeting = await client.post("/meetings", headers=organiser, json={
        "title": f"Drill meeting {tag}", "description": "Planning.", "kind": "in_person", "scope_type": "network",
        "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat(),
        "venue": "Community Hall", "capacity": 20})  # fmt: skip
    assert meeting.status_code == 201, meeting.text
    meeting_id = meeting.json()["id"]
    rsvp = await client.post(f"/events/{meeting_id}/rsvp", data={"name": people["alice"][0],
                                                                 "email": people["alice"][1]})  # fmt: skip
    assert rsvp.status_code in (200, 303), rsvp.text
    campaign = await client.post("/campaigns/api/campaigns", headers=organiser, json={
        "title": f"Drill campaign {tag}", "goal": "Equal care", "summary": "Act.", "issues": ["health"],
        "asks": [{"kind": "petition", "title": "Sign", "addressee": "The Minister", "body": "Act now.", "goal": 10}]})
    assert campaign.status_code == 201, campaign.text
    ask = campaign.json()["asks"][0]
    signed = await client.post(f"/campaigns/{campaign.json()['id']}/asks/{ask['id']}",
                               data={"name": people["bob"][0], "email": people["bob"][1]})  # fmt: skip
    assert signed.status_code in (200, 303), signed.text

    membership = await drill.db("membership")
    ids = {who: await membership.fetchval("SELECT id::text FROM members WHERE email_normalised = $1", email)
           for who, (_, email) in people.items()}  # fmt: skip
    erased = await client.post(f"/members/{ids['carol']}/erase", headers=organiser, data={"confirm": "erase"})
    assert erased.status_code in (200, 303), erased.text
    events_db, campaigns_db = await drill.db("events"), await drill.db("campaigns")

    async def settled() -> bool:
        pending = 0
        for conn in (membership, events_db, campaigns_db):
            pending += await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return pending == 0 and await campaigns_db.fetchval("SELECT count(*) FROM actions") >= 1

    deadline = time.monotonic() + 120
    while not await settled():
        assert time.monotonic() < deadline, "the drill network did not settle"
        await asyncio.sleep(0.25)
    await asyncio.sleep(3)  # the consumers handle what was just published
    drill.run("-m", "deploy.local.backup", "create")
    first = sorted(drill.backups.glob("*Z"))[-1]
    exported = json.loads((first / "manifest.json").read_text())["kafka"]["records"]
    assert sum(exported["membership.members"].values()) >= 4 and sum(exported["campaigns.actions"].values()) >= 1

    # Frank is erased after that backup (a second backup records it in the erasure ledger).
    erased = await client.post(f"/members/{ids['frank']}/erase", headers=organiser, data={"confirm": "erase"})
    assert erased.status_code in (200, 303), erased.text
    drill.run("-m", "deploy.local.backup", "create")
    assert ids["frank"] in json.loads((drill.backups / "erasures.json").read_text())
    for conn in (membership, events_db, campaigns_db):
        await conn.close()
    await client.aclose()
    mail_before = {who: len(messages_to(drill, email)) for who, (_, email) in people.items()}

    # The machine is lost: every database and Kafka's data; then the older backup is restored.
    drill.launcher("stop")
    drill.destroy_data()
    sealed = (first / "membership.dump.enc").read_bytes()
    assert people["alice"][1].encode() not in sealed and b"Drill" + tag.encode() not in sealed, "backups are sealed"
    drill.run("-m", "deploy.local.backup", "restore", str(first), timeout=900)
    drill.launcher("up")

    membership = await drill.db("membership")
    query = "SELECT id::text, status, name, email_normalised FROM members WHERE id::text = ANY($1::text[])"
    rows = {r["id"]: r for r in await membership.fetch(query, list(ids.values()))}
    assert rows[ids["alice"]]["email_normalised"] == people["alice"][1]
    assert rows[ids["bob"]]["name"] == people["bob"][0]
    assert rows[ids["carol"]]["status"] == "erased" and rows[ids["carol"]]["email_normalised"] is None
    assert rows[ids["frank"]]["status"] == "erased", "an erasure made after the backup is applied again"
    assert rows[ids["frank"]]["email_normalised"] is None and people["frank"][0] not in rows[ids["frank"]]["name"]
    events_db, campaigns_db = await drill.db("events"), await drill.db("campaigns")
    assert await events_db.fetchval("SELECT count(*) FROM meetings WHERE id = $1", meeting_id) == 1
    assert await events_db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", meeting_id) == 1
    assert await campaigns_db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1", ask["id"]) == 1

    # The reporting read model rebuilt from the restored topics equals the restored one.
    checked = drill.service("campaigns", "rebuild-reporting", "--check")
    assert "equal the live ones" in checked

    # Life goes on: a new join is welcomed once; nobody from before is welcomed again.
    newcomer = f"dave-{tag}@example.org"
    async with httpx.AsyncClient(base_url=drill.gateway, timeout=30) as again:
        joined = await again.post("/join", data={"name": f"Dave Drill{tag}", "email": newcomer, "postcode": "B1 1AA",
                                                 "email_consent": "yes"})  # fmt: skip
    assert joined.status_code in (200, 303)
    wait_until(lambda: messages_to(drill, newcomer), what="the newcomer's welcome")
    await asyncio.sleep(5)
    assert len(messages_to(drill, newcomer)) == 1
    for who, (_, email) in people.items():
        assert len(messages_to(drill, email)) == mail_before[who], f"{who} got an email again after the restore"

    # Frank's erasure reached the other services again: nothing of him is readable anywhere.
    for conn, service in ((membership, "membership"), (events_db, "events"), (campaigns_db, "campaigns")):
        for table in await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema='public'"):
            found = await conn.fetchval(
                f'SELECT count(*) FROM "{table["table_name"]}" t WHERE t::text ILIKE $1', f"%frank-{tag}%"
            )
            assert found == 0, f"{service}.{table['table_name']} still holds frank's address"
    for conn in (membership, events_db, campaigns_db):
        await conn.close()
