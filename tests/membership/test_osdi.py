"""OSDI under /api/v2 as Action Network serves it: entry point, people (paged, one, update), the person signup
helper (match by email, merge, add_tags), tags and taggings; HAL+JSON; OSDI-API-Token keys with scope."""

from __future__ import annotations

import uuid

import pytest

from services.membership import seeds
from tests.membership.conftest import join_form, make_organiser, member_by_email, of_member, unique_email

BIRMINGHAM = seeds.unit_id("region", "birmingham-black-country")
EAST_MIDLANDS = seeds.unit_id("region", "east-midlands")


async def api_key(client, db, scope_type: str = "network", scope_id: str = "") -> tuple[str, dict[str, str]]:
    _, headers = await make_organiser(db, scope_type, scope_id or None)
    created = await client.post(
        "/organisers/api-keys",
        headers=headers,
        data={"name": f"CRM {uuid.uuid4().hex[:6]}", "scope_type": scope_type, "scope_id": scope_id},
    )
    assert created.status_code == 201
    key = created.text.split('<code id="new-api-key">')[1].split("</code>")[0]
    key_id = await db.fetchval("SELECT id FROM api_keys ORDER BY created_at DESC LIMIT 1")
    return key_id, {"OSDI-API-Token": key}


@pytest.fixture
async def network_key(client, db) -> dict[str, str]:
    return (await api_key(client, db))[1]


async def test_entry_point_links_every_collection_in_hal(client, network_key):
    response = await client.get("/api/v2", headers=network_key)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/hal+json")
    links = response.json()["_links"]
    for rel in ("osdi:people", "osdi:tags", "osdi:person_signup_helper", "osdi:events", "osdi:petitions"):
        assert links[rel]["href"].startswith("http")


async def test_signup_helper_adds_then_matches_by_email_merges_and_tags(client, db, kafka, network_key):
    email = unique_email("osdi")
    body = {
        "person": {
            "given_name": "Olaudah",
            "family_name": "Equiano",
            "email_addresses": [{"address": email.upper(), "status": "subscribed"}],
            "postal_addresses": [{"postal_code": "le1 5ww"}],
        },
        "add_tags": ["volunteer", "Leicester 2026"],
    }
    first = await client.post("/api/v2/people", json=body, headers=network_key)
    assert first.status_code == 201, first.text
    person = first.json()
    assert person["given_name"] == "Olaudah" and person["email_addresses"][0]["address"] == email
    assert person["postal_addresses"][0]["postal_code"] == "LE1 5WW"
    member = await member_by_email(db, email)
    assert member["region_id"] == EAST_MIDLANDS and member["email_consent"] is True
    assert member["source"].startswith("api:")
    [joined] = await kafka.wait_for(of_member(member["id"], "MemberJoined"))
    assert joined.data["email_consent"] is True

    again = {
        "person": {
            "given_name": "Olaudah",
            "family_name": "Equiano-Vassa",
            "email_addresses": [{"address": f" {email} "}],
        },
        "add_tags": ["volunteer", "speaker"],
    }
    merged = await client.post("/api/v2/person_signup_helper", json=again, headers=network_key)
    assert merged.status_code == 200 and merged.json()["family_name"] == "Equiano-Vassa"
    assert await db.fetchval("SELECT count(*) FROM members WHERE email_normalised = $1", email) == 1
    assert (await member_by_email(db, email))["postcode"] == "LE1 5WW"  # merged, not replaced by nothing
    tags = await db.fetch(
        "SELECT t.name FROM taggings g JOIN tags t ON t.id = g.tag_id WHERE g.member_id = $1 ORDER BY t.name",
        member["id"],
    )
    assert [t["name"] for t in tags] == ["Leicester 2026", "speaker", "volunteer"]
    [updated] = await kafka.wait_for(of_member(member["id"], "MemberProfileUpdated"))
    assert updated.data["changed"] == ["name"]


async def test_people_are_paged_in_hal_and_one_person_is_read_and_updated(client, db, kafka, network_key):
    for _ in range(3):
        await client.post("/join", data=join_form(unique_email("paged")))
    page1 = await client.get("/api/v2/people", params={"page": 1, "per_page": 2}, headers=network_key)
    body = page1.json()
    assert page1.status_code == 200 and body["per_page"] == 2 and body["page"] == 1
    assert len(body["_embedded"]["osdi:people"]) == 2 and body["total_records"] >= 3
    assert body["total_pages"] == -(-body["total_records"] // 2) and "next" in body["_links"]
    page2 = (await client.get(body["_links"]["next"]["href"], headers=network_key)).json()
    assert page2["page"] == 2 and "previous" in page2["_links"]
    first_ids = {p["identifiers"][0] for p in body["_embedded"]["osdi:people"]}
    assert first_ids.isdisjoint({p["identifiers"][0] for p in page2["_embedded"]["osdi:people"]})
    big = await client.get("/api/v2/people", params={"per_page": 500}, headers=network_key)
    assert big.json()["per_page"] == 25

    email = unique_email("put")
    await client.post("/join", data=join_form(email, postcode="B1 1AA"))
    member_id = (await member_by_email(db, email))["id"]
    one = await client.get(f"/api/v2/people/{member_id}", headers=network_key)
    assert one.status_code == 200 and one.json()["_links"]["self"]["href"].endswith(f"/api/v2/people/{member_id}")
    changed = await client.put(
        f"/api/v2/people/{member_id}",
        headers=network_key,
        json={
            "postal_addresses": [{"postal_code": "NG1 5FS"}],
            "email_addresses": [{"address": email, "status": "unsubscribed"}],
        },
    )
    assert changed.status_code == 200, changed.text
    row = await member_by_email(db, email)
    assert row["postcode"] == "NG1 5FS" and row["region_id"] == EAST_MIDLANDS and row["email_consent"] is False
    [withdrawn] = await kafka.wait_for(of_member(member_id, "ConsentChanged"))
    assert withdrawn.data["granted"] is False and withdrawn.data["source"].startswith("api:")


async def test_tags_and_taggings(client, db, network_key):
    email = unique_email("tagged")
    await client.post("/join", data=join_form(email))
    member_id = (await member_by_email(db, email))["id"]
    tag = await client.post("/api/v2/tags", json={"name": f"donor-{uuid.uuid4().hex[:6]}"}, headers=network_key)
    assert tag.status_code == 201
    tag_id = tag.json()["identifiers"][0].split(":")[1]
    tags = (await client.get("/api/v2/tags", params={"per_page": 25}, headers=network_key)).json()
    assert tags["total_records"] >= 1 and tags["_embedded"]["osdi:tags"][0]["_links"]["self"]["href"]
    person_href = f"http://x/api/v2/people/{member_id}"
    tagged = await client.post(
        f"/api/v2/tags/{tag_id}/taggings", headers=network_key, json={"_links": {"osdi:person": {"href": person_href}}}
    )
    assert tagged.status_code == 201
    tagging_id = tagged.json()["identifiers"][0].split(":")[1]
    listing = (await client.get(f"/api/v2/tags/{tag_id}/taggings", headers=network_key)).json()
    assert listing["total_records"] == 1
    assert listing["_embedded"]["osdi:taggings"][0]["_links"]["osdi:person"]["href"].endswith(member_id)
    mine = (await client.get(f"/api/v2/people/{member_id}/taggings", headers=network_key)).json()
    assert mine["total_records"] == 1
    removed = await client.delete(f"/api/v2/tags/{tag_id}/taggings/{tagging_id}", headers=network_key)
    assert removed.status_code == 200
    assert (await client.get(f"/api/v2/tags/{tag_id}/taggings", headers=network_key)).json()["total_records"] == 0
    assert (await client.get("/api/v2/tags/no-such-tag", headers=network_key)).status_code == 404


async def test_a_key_reaches_only_its_scope_and_stops_working_once_revoked(client, db):
    brum, notts = unique_email("k-brum"), unique_email("k-notts")
    await client.post("/join", data=join_form(brum, postcode="B1 1AA"))
    await client.post("/join", data=join_form(notts, postcode="NG1 5FS"))
    key_id, key = await api_key(client, db, "region", BIRMINGHAM)
    notts_id = (await member_by_email(db, notts))["id"]
    brum_id = (await member_by_email(db, brum))["id"]
    assert (await client.get(f"/api/v2/people/{brum_id}", headers=key)).status_code == 200
    assert (await client.get(f"/api/v2/people/{notts_id}", headers=key)).status_code == 404
    listing = await client.get("/api/v2/people", params={"q": "k-", "per_page": 25}, headers=key)
    emails = {p["email_addresses"][0]["address"] for p in listing.json()["_embedded"]["osdi:people"]}
    assert brum in emails and notts not in emails
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE actor = $1", f"api-key:{key_id}") == 2

    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key_id)
    revoked = await client.get("/api/v2/people", headers=key)
    assert revoked.status_code == 401 and "revoked" in revoked.text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"person": {"email_addresses": [{"address": "not-an-email"}]}}, "not valid"),
        ({"person": {"given_name": "No Email"}}, "needs an email address"),
        ({"person": {"given_name": "x" * 130, "email_addresses": [{"address": "long@example.org"}]}}, "characters"),
        (
            {
                "person": {
                    "email_addresses": [{"address": "pc@example.org"}],
                    "postal_addresses": [{"postal_code": "X"}],
                }
            },
            "not a UK postcode",
        ),
        ({"person": {"email_addresses": [{"address": "t@example.org"}]}, "add_tags": ["t" * 101]}, "add_tags"),
        ({"nobody": True}, "person"),
    ],
)
async def test_bad_signup_input_is_a_400_and_stores_nothing(client, db, network_key, body, reason):
    outbox_before = await db.fetchval("SELECT count(*) FROM outbox")
    members_before = await db.fetchval("SELECT count(*) FROM members")
    response = await client.post("/api/v2/people", json=body, headers=network_key)
    assert response.status_code == 400 and reason in response.json()["error"]
    assert await db.fetchval("SELECT count(*) FROM members") == members_before
    assert await db.fetchval("SELECT count(*) FROM outbox") == outbox_before


async def test_missing_forged_or_unknown_keys_are_refused(client, db, membership_settings):
    from shared import auth

    assert (await client.get("/api/v2/people")).status_code == 401
    forged = auth.issue("not-this-networks-secret-key", auth.OrganiserScope("x", "network", key_id="k"), auth.OSDI_API)
    assert (await client.get("/api/v2/people", headers={"OSDI-API-Token": forged})).status_code == 401
    never_issued = auth.issue(
        membership_settings.secret_key, auth.OrganiserScope("x", "network", key_id=str(uuid.uuid4())), auth.OSDI_API
    )
    assert (await client.get("/api/v2/people", headers={"OSDI-API-Token": never_issued})).status_code == 401
    session = auth.issue(membership_settings.secret_key, auth.OrganiserScope("x", "network"))
    assert (await client.get("/api/v2/people", headers={"OSDI-API-Token": session})).status_code == 401


async def test_a_person_added_with_an_email_alone_is_named_name_not_given_on_the_organisers_pages(
    client, db, network_key
):
    """Action Network's clients add people by email alone: the member list links them by words, never by an empty
    link (axe's link-name); their page says so and names the API key they came through, not its id."""
    email = unique_email("nameless")
    added = await client.post(
        "/api/v2/people", json={"person": {"email_addresses": [{"address": email}]}}, headers=network_key
    )
    assert added.status_code == 201, added.text
    member = await member_by_email(db, email)
    assert member["name"] == ""
    _, organiser = await make_organiser(db, "network", None)
    listed = await client.get("/members", params={"q": email}, headers=organiser)
    assert listed.status_code == 200
    assert f'<a href="/members/{member["id"]}">Name not given</a>' in listed.text
    page = await client.get(f"/members/{member['id']}", headers=organiser)
    assert "<h1>Name not given</h1>" in page.text
    key_name = await db.fetchval("SELECT name FROM api_keys WHERE id = $1", member["source"].removeprefix("api:"))
    assert f"Added through the API with the key \u201c{key_name}\u201d" in page.text  # the key by name, not its id
    assert member["source"] not in page.text
    erase = await client.get(f"/members/{member['id']}/erase", headers=organiser)
    assert f"<h1>Erase {email}?</h1>" in erase.text  # asked by the address, the one thing known of them
