"""OSDI people as an Action Network sync relies on them: identifiers in both forms, names kept as sent, partial
updates, `filter`, custom fields and phone numbers (in the member's download, gone on erasure), OSDI error
bodies, Action Network's URL forms, and a signup helper that never touches a person outside the key's scope."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.membership import seeds
from shared import tokens
from tests.membership.conftest import confirmed_request, join_form, member_by_email, unique_email
from tests.membership.test_osdi import api_key
from tests.support.inprocess import poll

BIRMINGHAM = seeds.unit_id("region", "birmingham-black-country")


@pytest.fixture
async def network_key(client, db) -> dict[str, str]:
    return (await api_key(client, db))[1]


async def signup(client, key, person: dict, **extra) -> dict:
    response = await client.post("/api/v2/people", json={"person": person, **extra}, headers=key)
    assert response.status_code in (200, 201), response.text
    return response.json()


def own_id(person: dict) -> str:
    return person["identifiers"][0].split(":", 1)[1]


async def test_every_resource_carries_an_action_network_identifier_and_either_form_finds_it(client, network_key):
    person = await signup(client, network_key, {"email_addresses": [{"address": unique_email("ids")}]})
    member_id = own_id(person)
    assert person["identifiers"] == [f"groundswell:{member_id}", f"action_network:{member_id}"]
    for form in (member_id, f"action_network:{member_id}", f"groundswell:{member_id}"):
        found = await client.get(f"/api/v2/people/{form}", headers=network_key)
        assert found.status_code == 200 and found.json()["identifiers"] == person["identifiers"]
    tag = (await client.post("/api/v2/tags", json={"name": f"ids-{uuid.uuid4().hex[:6]}"}, headers=network_key)).json()
    assert tag["identifiers"][1].startswith("action_network:")
    tag_id = own_id(tag)
    href = f"https://example.org/api/v2/people/action_network:{member_id}"
    tagging = await client.post(
        f"/api/v2/tags/action_network:{tag_id}/taggings",
        json={"_links": {"osdi:person": {"href": href}}},
        headers=network_key,
    )
    assert tagging.status_code == 201 and tagging.json()["identifiers"][1].startswith("action_network:")
    read = await client.get(httpx.URL(tagging.json()["_links"]["self"]["href"]).path, headers=network_key)
    assert read.status_code == 200 and read.json()["_links"]["osdi:person"]["href"].endswith(member_id)


async def test_names_are_kept_as_sent_and_a_partial_update_changes_only_what_it_carries(client, db, network_key):
    email = unique_email("names")
    person = await signup(
        client,
        network_key,
        {"given_name": "Anna Maria", "family_name": "van der Berg", "email_addresses": [{"address": email}]},
    )
    assert (person["given_name"], person["family_name"]) == ("Anna Maria", "van der Berg")
    assert (await member_by_email(db, email))["name"] == "Anna Maria van der Berg"  # the display name, as before

    member_id = own_id(person)
    changed = await client.put(f"/api/v2/people/{member_id}", json={"given_name": "Anne-Marie"}, headers=network_key)
    assert changed.status_code == 200
    assert (changed.json()["given_name"], changed.json()["family_name"]) == ("Anne-Marie", "van der Berg")
    merged = await signup(client, network_key, {"family_name": "Berg", "email_addresses": [{"address": email}]})
    assert (merged["given_name"], merged["family_name"]) == ("Anne-Marie", "Berg")
    row = await member_by_email(db, email)
    assert (row["given_name"], row["family_name"], row["name"]) == ("Anne-Marie", "Berg", "Anne-Marie Berg")


async def test_a_person_with_only_an_email_address_is_added(client, db, network_key):
    email = unique_email("bare")
    response = await client.post(
        "/api/v2/people/", json={"person": {"email_addresses": [{"address": email}]}}, headers=network_key
    )
    assert response.status_code == 201, response.text  # Action Network's trailing-slash form, no redirect
    assert response.json()["given_name"] == "" and (await member_by_email(db, email)) is not None


async def test_people_are_filtered_by_email_and_by_dates(client, db, network_key):
    email = unique_email("filter")
    person = await signup(client, network_key, {"given_name": "Filtered", "email_addresses": [{"address": email}]})
    by_email = await client.get(
        "/api/v2/people", params={"filter": f"email_address eq '{email.upper()}'"}, headers=network_key
    )
    assert by_email.status_code == 200, by_email.text
    assert [p["identifiers"] for p in by_email.json()["_embedded"]["osdi:people"]] == [person["identifiers"]]

    since = datetime.fromisoformat(person["modified_date"]) - timedelta(seconds=1)
    await asyncio.sleep(0.05)
    later = await signup(client, network_key, {"email_addresses": [{"address": unique_email("filter-later")}]})
    window = (
        f"modified_date gt '{since.isoformat()}' and created_date lt '{datetime.now(UTC).isoformat()}'"
        f" and modified_date lt '{(datetime.now(UTC) + timedelta(minutes=1)).isoformat()}'"
    )
    recent = (await client.get("/api/v2/people", params={"filter": window, "per_page": 25}, headers=network_key)).json()
    found = {p["identifiers"][0] for p in recent["_embedded"]["osdi:people"]}
    assert {person["identifiers"][0], later["identifiers"][0]} <= found
    assert recent["_links"]["self"]["href"].count("filter=") == 1  # links keep the filter
    old = f"created_date lt '{(datetime.now(UTC) - timedelta(days=3650)).date().isoformat()}'"
    assert (await client.get("/api/v2/people", params={"filter": old}, headers=network_key)).json()[
        "total_records"
    ] == 0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("given_name eq 'Anna'", "given_name eq is not supported"),
        ("email_address gt 'a@example.org'", "email_address gt is not supported"),
        ("modified_date gt '2026-01-01' or created_date lt '2026-02-01'", "joined only with and"),
        ("modified_date gt 2026-01-01", "not understood"),
        ("modified_date gt 'yesterday'", "takes a date"),
    ],
)
async def test_an_unsupported_filter_is_a_400_in_osdis_error_body(client, network_key, text, says):
    response = await client.get("/api/v2/people", params={"filter": text}, headers=network_key)
    assert response.status_code == 400 and says in response.json()["error"]


async def test_custom_fields_and_phone_numbers_are_kept_downloaded_and_erased(
    client, db, network_key, membership_settings
):
    email = unique_email("custom")
    person = await signup(
        client,
        network_key,
        {
            "email_addresses": [{"address": email}],
            "phone_numbers": [{"number": "+44 7700 900123", "primary": True}],
            "custom_fields": {"employer": "Co-op", "shifts": 3},
        },
    )
    assert person["phone_numbers"] == [{"number": "+447700900123", "primary": True}]
    assert person["custom_fields"]["employer"] == "Co-op" and person["custom_fields"]["shifts"] == 3
    assert person["custom_fields"]["engagement_level"]  # the system's own fields are still there
    member_id = own_id(person)
    updated = await client.put(
        f"/api/v2/people/{member_id}", json={"custom_fields": {"shifts": None, "branch": "North"}}, headers=network_key
    )
    custom = updated.json()["custom_fields"]
    assert custom["employer"] == "Co-op" and custom["branch"] == "North" and "shifts" not in custom
    refused = await client.put(
        f"/api/v2/people/{member_id}", json={"custom_fields": {"status": "x"}}, headers=network_key
    )
    assert refused.status_code == 400 and "status" in refused.json()["error"]

    await confirmed_request(client, db, membership_settings, member_id, "download")
    request_id = await poll(lambda: db.fetchval(
        "SELECT id FROM member_data_requests WHERE member_id = $1 AND ready_at IS NOT NULL", member_id), 60)
    token = tokens.sign(membership_settings.secret_key, tokens.MEMBER_DATA, {"r": request_id})
    downloaded = await client.post("/me/download", data={"token": token})
    download = json.loads(downloaded.text)["membership"]["member"]
    assert download["phone_number"] == "+447700900123"
    assert download["custom_fields"] == {"employer": "Co-op", "branch": "North"}

    erased = await confirmed_request(client, db, membership_settings, member_id, "erase")
    assert erased.status_code == 200
    row = await db.fetchrow("SELECT * FROM members WHERE id = $1", member_id)
    assert row["phone_number"] is None and json.loads(row["custom_fields"]) == {}
    assert row["given_name"] is None and row["family_name"] is None


async def test_a_signup_for_someone_outside_the_keys_scope_changes_nothing_and_answers_as_for_a_new_person(client, db):
    notts = unique_email("outside")
    await client.post("/join", data=join_form(notts, name="Kept Name", postcode="NG1 5FS"))
    before = await member_by_email(db, notts)
    outbox_before = await db.fetchval("SELECT count(*) FROM outbox")
    _, brum_key = await api_key(client, db, "region", BIRMINGHAM)
    sent = {
        "given_name": "Changed",
        "family_name": "By Someone Else",
        "email_addresses": [{"address": notts, "status": "unsubscribed"}],
        "postal_addresses": [{"postal_code": "B1 1AA"}],
        "custom_fields": {"x": "y"},
    }
    outside = await client.post("/api/v2/people", json={"person": sent, "add_tags": ["outside"]}, headers=brum_key)
    assert await db.fetchval("SELECT count(*) FROM outbox") == outbox_before  # nothing announced either
    stranger = await client.post(
        "/api/v2/people",
        json={"person": {**sent, "email_addresses": [{"address": unique_email("new"), "status": "unsubscribed"}]}},
        headers=brum_key,
    )
    assert outside.status_code == stranger.status_code == 201
    a, b = outside.json(), stranger.json()
    assert sorted(a) == sorted(b) and a["given_name"] == b["given_name"] == "Changed"
    assert a["identifiers"][0] != f"groundswell:{before['id']}"
    after = await member_by_email(db, notts)
    assert dict(after) == dict(before)
    assert await db.fetchval("SELECT count(*) FROM taggings WHERE member_id = $1", before["id"]) == 0


async def test_a_signup_for_someone_in_the_keys_scope_changes_them_at_once_as_action_network_does(
    client, db, kafka, network_key
):
    email = unique_email("inscope")
    await client.post("/join", data=join_form(email, name="Amy Garvey", postcode="B1 1AA"))
    member_id = (await member_by_email(db, email))["id"]
    sent = {
        "given_name": "Amy Ashwood",
        "family_name": "Garvey",
        "email_addresses": [{"address": email}],
        "phone_numbers": [{"number": "07700 900456"}],
    }
    merged = await client.post("/api/v2/people", json={"person": sent, "add_tags": ["speaker"]}, headers=network_key)
    assert merged.status_code == 200 and merged.json()["given_name"] == "Amy Ashwood"
    row = await member_by_email(db, email)
    assert row["name"] == "Amy Ashwood Garvey" and row["phone_number"] == "07700900456"
    assert row["postcode"] == "B1 1AA" and row["email_consent"] is True  # only what is sent changes
    # An integration's key within its scope is trusted with its people: nothing waits for the member to confirm.
    assert await db.fetchval("SELECT count(*) FROM member_requests WHERE member_id = $1", member_id) == 0
    assert await db.fetchval("SELECT count(*) FROM taggings WHERE member_id = $1", member_id) == 1


async def test_a_signup_for_someone_in_scope_who_left_neither_brings_them_back_nor_subscribes_them(
    client, db, network_key, membership_settings
):
    email = unique_email("leftscope")
    await client.post("/join", data=join_form(email, name="Claudia Jones"))
    member_id = (await member_by_email(db, email))["id"]
    preferences = tokens.sign(membership_settings.secret_key, tokens.PREFERENCES, {"m": member_id})
    assert (await client.post("/me/leave", data={"token": preferences})).status_code == 200
    left = dict(await member_by_email(db, email))
    outbox_before = await db.fetchval("SELECT count(*) FROM outbox")

    sent = {
        "given_name": "Someone",
        "family_name": "Else",
        "email_addresses": [{"address": email, "status": "subscribed"}],
    }
    answer = await client.post("/api/v2/people", json={"person": sent, "add_tags": ["returner"]}, headers=network_key)
    assert answer.status_code == 200 and answer.json()["custom_fields"]["status"] == "left"
    assert dict(await member_by_email(db, email)) == left
    assert await db.fetchval("SELECT count(*) FROM outbox") == outbox_before
    assert await db.fetchval("SELECT count(*) FROM taggings WHERE member_id = $1", member_id) == 1


async def test_errors_under_the_api_are_osdi_error_bodies(client, network_key):
    unauthenticated = await client.get("/api/v2/people")
    assert unauthenticated.status_code == 401 and "OSDI-API-Token" in unauthenticated.json()["error"]
    bad_page = await client.get("/api/v2/people", params={"page": "two"}, headers=network_key)
    assert bad_page.status_code == 422 and "page" in bad_page.json()["error"]
    not_allowed = await client.patch("/api/v2/people", headers=network_key)
    assert not_allowed.status_code == 405 and "detail" not in not_allowed.json()
    missing = await client.get("/api/v2/people/nobody", headers=network_key)
    assert missing.status_code == 404 and missing.json()["error"]
    assert "detail" in (await client.get("/no-such-page")).json()  # outside the API, FastAPI's own body stays


async def test_per_page_is_capped_at_25_on_every_collection(client, network_key):
    for path in ("/api/v2/people", "/api/v2/tags"):
        body = (await client.get(path, params={"per_page": 500}, headers=network_key)).json()
        assert body["per_page"] == 25, path
