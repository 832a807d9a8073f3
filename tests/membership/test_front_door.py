"""The network's front door as organisers keep it: the home page's description and a privacy notice published in
versions, each consent record naming the version in force, every version still readable."""

from __future__ import annotations

from services.membership import seeds
from tests.membership.conftest import join_form, make_organiser, member_by_email, poll, unique_email

HTML = {"Accept": "text/html"}


async def test_privacy_notice_ships_with_what_is_collected_and_how_to_erase_it(client):
    response = await client.get("/privacy?version=1")  # the notice a new installation starts with
    assert response.status_code == 200
    for heading in ("What we collect", "Who sees it", "Getting or erasing your data", "Unsubscribing", "Contact"):
        assert f"<h2>{heading}</h2>" in response.text


async def test_a_new_privacy_notice_is_in_force_for_new_consent_and_the_old_one_stays_readable(client, db):
    _, network = await make_organiser(db)
    before = await db.fetchval("SELECT max(version) FROM privacy_notices")
    published = await client.post(
        "/admin/public/privacy", headers=network, data={"body": "## What we collect\n\nYour name and email address."}
    )
    assert published.status_code == 303
    version = before + 1

    current = await client.get("/privacy")
    assert f"Version {version}, in force since" in current.text and "Your name and email address." in current.text
    older = await client.get(f"/privacy?version={before}")
    assert older.status_code == 200 and "It is no longer in force" in older.text
    assert (await client.get("/privacy?version=999999", headers=HTML)).status_code == 404

    email = unique_email("privacy")
    assert (await client.post("/join", data=join_form(email))).status_code == 303
    member = await poll(lambda: member_by_email(db, email))
    agreed = await db.fetchval("SELECT privacy_version FROM consent_records WHERE member_id = $1", member["id"])
    assert agreed == version


async def test_only_network_organisers_change_the_home_page_and_the_privacy_notice(client, db):
    _, regional = await make_organiser(db, "region", seeds.unit_id("region", "east-midlands"))
    before = await db.fetchval("SELECT max(version) FROM privacy_notices")
    refused = await client.post("/admin/public/privacy", headers={**regional, **HTML}, data={"body": "Mine now"})
    assert refused.status_code == 403 and "Only the network&#39;s organisers" in refused.text
    assert await db.fetchval("SELECT max(version) FROM privacy_notices") == before

    _, network = await make_organiser(db)
    described = await client.post(
        "/admin/public/description", headers=network, data={"description": "Nurses and porters against racism."}
    )
    assert described.status_code == 303
    assert "Nurses and porters against racism." in (await client.get("/")).text
    empty = await client.post("/admin/public/description", headers=network, data={"description": "  "})
    assert empty.status_code == 422 and "Write between 1 and 2000 characters" in empty.text
