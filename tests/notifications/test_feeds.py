"""Each organiser's private Atom feed of their digests: valid Atom, updated by new digests, revocable."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import feedparser

from deploy.local import launcher
from tests.notifications.conftest import organiser_session, poll

ROOT = Path(__file__).resolve().parents[2]


async def _feed_token(db, organiser_id: str) -> str:
    return await db.fetchval("SELECT feed_token FROM organisers WHERE organiser_id = $1", organiser_id)


async def _ready(db, organiser_id: str) -> bool:
    return bool(await db.fetchval("SELECT email IS NOT NULL FROM organisers WHERE organiser_id = $1", organiser_id))


async def _activity_of(db, subject_id: str) -> int:
    return await db.fetchval("SELECT count(*) FROM activity WHERE subject_id = $1", subject_id)


async def test_the_atom_feed_parses_and_updates_after_a_new_digest(notifications_server, network, db, client):
    region = await network.unit("region", "Warwickshire")
    group = await network.unit("group", "Leamington", region)
    organiser_id, _ = await network.organiser("region", region, name="Fran Feed")
    await poll(lambda: _ready(db, organiser_id))
    token = await _feed_token(db, organiser_id)
    url = f"/feeds/digests/{token}.atom"

    empty = await client.get(url)
    assert empty.status_code == 200
    assert empty.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(empty.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.entries == []
    assert "Fran Feed" in parsed.feed.title

    meeting_id = await network.meeting("Leamington litter pick", "group", group)
    await poll(lambda: _activity_of(db, meeting_id))
    assert await notifications_server.digests.run_now(organiser_id=organiser_id) == 1
    first = feedparser.parse((await client.get(url)).content)
    assert not first.bozo and len(first.entries) == 1
    assert f"Leamington litter pick {network.tag}" in first.entries[0].content[0].value
    assert first.entries[0].id.startswith("urn:uuid:")
    assert first.feed.links[0].href.endswith(url)

    member_id, _ = await network.member(region_id=region, group_id=group, level="active")
    await poll(lambda: _activity_of(db, member_id))
    assert await notifications_server.digests.run_now(organiser_id=organiser_id) == 1
    second = feedparser.parse((await client.get(url)).content)
    assert not second.bozo and len(second.entries) == 2
    newest = second.entries[0]
    assert newest.id != first.entries[0].id and second.entries[1].id == first.entries[0].id
    assert "1 joined" in newest.content[0].value
    assert second.feed.updated_parsed >= first.feed.updated_parsed


async def test_a_revoked_feed_address_answers_404_and_the_new_one_works(notifications_server, network, db, client):
    region = await network.unit("region", "Worcestershire")
    organiser_id, _ = await network.organiser("region", region)
    await poll(lambda: _ready(db, organiser_id))
    old = await _feed_token(db, organiser_id)
    assert (await client.get(f"/feeds/digests/{old}.atom")).status_code == 200

    headers = organiser_session(organiser_id, "region", region)
    page = await client.get("/notifications/organise/digests", headers=headers)
    assert page.status_code == 200 and f"/feeds/digests/{old}.atom" in page.text
    renewed = await client.post("/notifications/organise/digests/feed", headers=headers)
    assert renewed.status_code == 303

    new = await _feed_token(db, organiser_id)
    assert new != old
    assert (await client.get(f"/feeds/digests/{old}.atom")).status_code == 404
    response = await client.get(f"/feeds/digests/{new}.atom")
    assert response.status_code == 200 and not feedparser.parse(response.content).bozo
    assert f"/feeds/digests/{new}.atom" in (await client.get("/notifications/organise/digests", headers=headers)).text
    assert (await client.get("/feeds/digests/not-a-token.atom")).status_code == 404


async def test_through_the_gateway_the_running_service_serves_the_feed_and_emails_the_digest(
    system, gateway, mail, notifications_db, network
):
    """End to end: the deployed notifications service mirrors the organiser, `send-digests --now` builds their
    digest in its database, its delivery worker emails it, and the gateway serves the feed."""
    region = await network.unit("region", "Gateway County")
    organiser_id, email = await network.organiser("region", region, name="Gail Gateway")
    await network.meeting("Gateway County assembly", "region", region)

    async def token() -> str | None:
        return await notifications_db.fetchval(
            "SELECT feed_token FROM organisers WHERE organiser_id = $1 AND email IS NOT NULL", organiser_id
        )

    feed_token = await poll(token, timeout=60)
    url = f"/feeds/digests/{feed_token}.atom"
    before = await gateway.get(url)
    assert before.status_code == 200 and not feedparser.parse(before.content).bozo
    await poll(
        lambda: notifications_db.fetchval(
            "SELECT count(*) FROM activity WHERE detail->>'title' = $1", f"Gateway County assembly {network.tag}"
        ),
        timeout=60,
    )

    env = {
        **os.environ,
        "DATABASE_URL": launcher.database_url("notifications"),
        "SECRET_KEY": launcher.secret_key(),
        "LOG_JSON": "false",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.notifications",
        "send-digests",
        "--now",
        "--organiser",
        organiser_id,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    assert "1 digest(s) built" in stdout.decode()

    [message] = await mail.wait_for(email, timeout=60)
    assert f"Gateway County {network.tag}: your weekly digest" in message["subject"]
    assert f"Gateway County assembly {network.tag}" in message["text"]
    after = feedparser.parse((await gateway.get(url)).content)
    assert not after.bozo and len(after.entries) == 1 and after.entries[0].title == message["subject"]
