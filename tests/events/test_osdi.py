"""OSDI as Action Network serves it: events, attendances, the record attendance helper; HAL+JSON, paging."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from shared.auth import OSDI_API, OrganiserScope, issue
from tests.events.conftest import SECRET, of_meeting, schedule

API_TOKEN = {"OSDI-API-Token": issue(SECRET, OrganiserScope("integration-1", "network"), OSDI_API)}


async def test_events_are_listed_as_hal_with_paging(client, organiser):
    for _ in range(3):
        await schedule(client, organiser)
    response = await client.get("/api/v2/events", params={"per_page": 2, "page": 1}, headers=API_TOKEN)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/hal+json")
    body = response.json()
    assert body["per_page"] == 2 and body["page"] == 1 and body["total_records"] >= 3
    assert body["total_pages"] >= 2 and "next" in body["_links"]
    events = body["_embedded"]["osdi:events"]
    assert len(events) == 2 and len(body["_links"]["osdi:events"]) == 2
    first = events[0]
    assert first["identifiers"][0].startswith("groundswell:") and first["status"] in ("confirmed", "cancelled")
    assert first["_links"]["osdi:attendances"]["href"].endswith("/attendances")
    page2 = await client.get(httpx.URL(body["_links"]["next"]["href"]).raw_path.decode(), headers=API_TOKEN)
    assert page2.status_code == 200 and page2.json()["page"] == 2


async def test_the_api_needs_a_valid_token(client):
    assert (await client.get("/api/v2/events")).status_code == 401
    assert (await client.get("/api/v2/events", headers={"OSDI-API-Token": "forged"})).status_code == 401


async def test_record_attendance_helper_adds_an_rsvp_and_lists_it(client, organiser, db, kafka):
    meeting = await schedule(client, organiser)
    email = f"osdi-{uuid.uuid4().hex[:8]}@example.org"
    response = await client.post(
        f"/api/v2/events/{meeting['id']}/attendances", headers=API_TOKEN,
        json={"person": {"given_name": "Olu", "family_name": "Ade", "email_addresses": [{"address": email}]}},
    )
    assert response.status_code == 201, response.text
    attendance = response.json()
    assert attendance["status"] == "accepted" and attendance["attended"] is False
    assert await db.fetchval("SELECT source FROM rsvps WHERE email = $1", email) == "osdi"
    await kafka.wait_for(of_meeting(meeting["id"], "RsvpReceived"))
    listed = (await client.get(f"/api/v2/events/{meeting['id']}/attendances", headers=API_TOKEN)).json()
    assert listed["total_records"] == 1
    assert listed["_embedded"]["osdi:attendances"][0]["identifiers"] == attendance["identifiers"]
    event = (await client.get(f"/api/v2/events/{meeting['id']}", headers=API_TOKEN)).json()
    assert event["total_accepted"] == 1


async def test_record_attendance_helper_can_record_someone_who_attended(client, organiser, kafka):
    meeting = await schedule(client, organiser)
    response = await client.post(
        f"/api/v2/events/{meeting['id']}/attendances", headers=API_TOKEN,
        json={"person": {"given_name": "Kim", "email_addresses": [{"address": "kim@example.org"}]}, "attended": True},
    )
    assert response.status_code == 201 and response.json()["attended"] is True
    await kafka.wait_for(of_meeting(meeting["id"], "AttendanceRecorded"))


async def test_record_attendance_helper_without_an_email_is_refused(client, organiser, db):
    meeting = await schedule(client, organiser)
    response = await client.post(f"/api/v2/events/{meeting['id']}/attendances", headers=API_TOKEN,
                                 json={"person": {"given_name": "No", "family_name": "Email"}})
    assert response.status_code == 400 and "email" in response.json()["error"]
    assert await db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", meeting["id"]) == 0


async def test_an_unknown_event_is_not_found(client):
    assert (await client.get(f"/api/v2/events/{uuid.uuid4()}", headers=API_TOKEN)).status_code == 404


def key_of(scope_type: str = "network", scope_id: str | None = None) -> dict[str, str]:
    """An API key's header, of a key made for (scope_type, scope_id)."""
    scope = OrganiserScope(f"integration-{uuid.uuid4().hex[:6]}", scope_type, scope_id)
    return {"OSDI-API-Token": issue(SECRET, scope, OSDI_API)}


def bare(resource: dict) -> str:
    """A resource's id as Action Network's clients read it (parsons keeps the `action_network:` identifier)."""
    return next(i for i in resource["identifiers"] if i.startswith("action_network:")).split(":", 1)[1]


def in_a_week(hour: int = 18) -> str:
    return (datetime.now(UTC) + timedelta(days=7)).replace(hour=hour, minute=0, second=0, microsecond=0).strftime(
        "%Y-%m-%d %H:%M:%S")


async def test_a_key_creates_an_event_in_its_own_scope_as_parsons_sends_it(client, db, kafka):
    region_key = key_of("region", "region-east")
    title = f"Regional assembly {uuid.uuid4().hex[:6]}"
    # parsons' create_event: a title, a start as str(datetime) and a location; no end.
    created = await client.post("/api/v2/events", headers=region_key, json={
        "title": title, "start_date": in_a_week(), "location": {"venue": "Town Hall", "locality": "Leicester",
                                                                 "postal_code": "LE1 9BG"}})
    assert created.status_code == 201, created.text
    event = created.json()
    assert event["identifiers"][1].startswith("action_network:") and event["title"] == title
    assert event["groundswell:scope"] == {"type": "region", "id": "region-east"}
    assert event["location"] == {"venue": "Town Hall, Leicester, LE1 9BG"}
    starts, ends = (datetime.fromisoformat(event[k]) for k in ("start_date", "end_date"))
    assert ends - starts == timedelta(hours=2)
    assert event["_links"]["self"]["href"].endswith(f"/api/v2/events/{bare(event)}")
    await kafka.wait_for(of_meeting(bare(event), "MeetingScheduled"))
    again = await client.get(f"/api/v2/events/action_network:{bare(event)}", headers=region_key)
    assert again.status_code == 200 and again.json()["title"] == title


async def test_a_key_cannot_create_an_event_outside_its_scope(client, db):
    title = f"Not theirs {uuid.uuid4().hex[:6]}"
    refused = await client.post("/api/v2/events", headers=key_of("region", "region-east"), json={
        "title": title, "start_date": in_a_week(), "location": {"venue": "Town Hall"},
        "groundswell:scope": {"type": "region", "id": "region-west"}})
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/hal+json"
    assert "part of the network" in refused.json()["error"]
    network_wide = await client.post("/api/v2/events", headers=key_of("group", "group-1"), json={
        "title": title, "start_date": in_a_week(), "location": {"venue": "Town Hall"},
        "groundswell:scope": {"type": "network"}})
    assert network_wide.status_code == 403
    assert await db.fetchval("SELECT count(*) FROM meetings WHERE title = $1", title) == 0


async def test_an_event_that_cannot_be_scheduled_is_a_400_saying_why(client, db):
    key = key_of()
    no_start = await client.post("/api/v2/events", headers=key, json={"title": "When?", "location": {"venue": "X"}})
    assert no_start.status_code == 400 and "start" in no_start.json()["error"]
    for shape in ({"title": {"a": 1}}, {"capacity": 10**12}, {"location": "here"}, [1, 2]):
        wrong = await client.post("/api/v2/events", headers=key, json=shape)
        assert wrong.status_code == 400 and wrong.json()["error"], shape
    assert await db.fetchval("SELECT count(*) FROM meetings WHERE title = 'When?'") == 0


async def test_a_key_changes_only_what_it_sends_and_only_in_its_scope(client, organiser, db, kafka):
    region_key = key_of("region", "region-east")
    mine = await schedule(client, organiser, scope_type="region", scope_id="region-east")
    changed = await client.put(f"/api/v2/events/action_network:{mine['id']}", headers=region_key,
                               json={"title": "Renamed assembly", "capacity": 50})
    assert changed.status_code == 200, changed.text
    assert changed.json()["title"] == "Renamed assembly" and changed.json()["capacity"] == 50
    assert changed.json()["description"] == mine["description"]
    await kafka.wait_for(of_meeting(mine["id"], "MeetingUpdated"))
    # parsons' update_event sends its payload form-encoded
    form = await client.put(f"/api/v2/events/{mine['id']}", headers=region_key, data={"description": "New plan"})
    assert form.status_code == 200 and form.json()["description"] == "New plan"
    cancelled = await client.put(f"/api/v2/events/{mine['id']}", headers=region_key, json={"status": "cancelled"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    theirs = await schedule(client, organiser)  # the whole network's: the region's key does not even see it
    refused = await client.put(f"/api/v2/events/{theirs['id']}", headers=region_key, json={"title": "Hijacked"})
    assert refused.status_code == 404
    assert await db.fetchval("SELECT title FROM meetings WHERE id = $1", theirs["id"]) == theirs["title"]


async def test_the_helper_records_a_person_with_only_an_email_address(client, organiser, db):
    meeting = await schedule(client, organiser)
    email = f"only-{uuid.uuid4().hex[:8]}@example.org"
    response = await client.post(f"/api/v2/events/{meeting['id']}/attendances", headers=API_TOKEN,
                                 json={"person": {"email_addresses": [{"address": email}]}})
    assert response.status_code == 201, response.text
    assert await db.fetchval("SELECT name FROM rsvps WHERE email = $1", email) is None


async def test_a_persons_attendances_are_those_at_events_the_key_covers(client, organiser, db):
    member = str(uuid.uuid4())
    network_meeting = await schedule(client, organiser)
    region_meeting = await schedule(client, organiser, scope_type="region", scope_id="region-east")
    link = {"_links": {"osdi:person": {"href": f"https://example.org/api/v2/people/action_network:{member}"}}}
    region_key = key_of("region", "region-east")
    for meeting in (network_meeting, region_meeting):
        made = await client.post(f"/api/v2/events/{meeting['id']}/attendances", headers=API_TOKEN, json=link)
        assert made.status_code == 201, made.text
        assert made.json()["_links"]["osdi:person"]["href"].endswith(f"/people/{member}")

    everything = (await client.get(f"/api/v2/people/{member}/attendances", headers=API_TOKEN)).json()
    assert everything["total_records"] == 2
    regional = (await client.get(f"/api/v2/people/action_network:{member}/attendances", headers=region_key)).json()
    assert [a["_links"]["osdi:event"]["href"].rsplit("/", 1)[1] for a in regional["_embedded"]["osdi:attendances"]] \
        == [region_meeting["id"]]
    hidden = next(a for a in everything["_embedded"]["osdi:attendances"]
                  if a["_links"]["osdi:event"]["href"].endswith(network_meeting["id"]))
    one = await client.get(f"/api/v2/people/{member}/attendances/{bare(hidden)}", headers=region_key)
    assert one.status_code == 404 and "error" in one.json()
    # nor through the event: the region's key does not read the network meeting's attendances, nor add to them
    assert (await client.get(f"/api/v2/events/{network_meeting['id']}/attendances",
                             headers=region_key)).status_code == 404
    before = await db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", network_meeting["id"])
    refused = await client.post(f"/api/v2/events/{network_meeting['id']}/attendances", headers=region_key,
                                json={"person": {"email_addresses": [{"address": "x@example.org"}]}})
    assert refused.status_code == 404
    assert await db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", network_meeting["id"]) == before


async def test_every_collection_caps_per_page_and_errors_are_osdi_bodies(client, organiser):
    meeting = await schedule(client, organiser)
    for path in ("/api/v2/events", f"/api/v2/events/{meeting['id']}/attendances",
                 f"/api/v2/people/{uuid.uuid4()}/attendances"):
        capped = await client.get(path, params={"per_page": 500}, headers=API_TOKEN)
        assert capped.status_code == 200 and capped.json()["per_page"] == 25, path
    for path, status in ((f"/api/v2/events/{uuid.uuid4()}", 404), ("/api/v2/events?page=x", 422),
                         ("/api/v2/events?page=99999999999999999999", 422)):
        answer = await client.get(path, headers=API_TOKEN)
        assert answer.status_code == status and answer.headers["content-type"] == "application/hal+json"
        assert set(answer.json()) == {"error"}
    assert set((await client.get("/api/v2/events")).json()) == {"error"}
