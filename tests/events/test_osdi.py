"""OSDI as Action Network serves it: events, attendances, the record attendance helper; HAL+JSON, paging."""

from __future__ import annotations

import uuid

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
