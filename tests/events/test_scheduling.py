"""Scheduling: organisers schedule, change and cancel meetings; bad input changes nothing and publishes nothing."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.events.conftest import meeting_body, of_meeting, organiser_headers, schedule


async def test_scheduling_stores_the_meeting_and_publishes_meeting_scheduled(client, organiser, db, kafka):
    meeting = await schedule(client, organiser, capacity=40, reminder_offsets=[1440, 60])
    row = await db.fetchrow("SELECT title, capacity, sequence, status FROM meetings WHERE id = $1", meeting["id"])
    assert row["capacity"] == 40 and row["sequence"] == 0 and row["status"] == "scheduled"
    reminders = await db.fetch("SELECT minutes_before FROM reminders WHERE meeting_id = $1", meeting["id"])
    assert sorted(r["minutes_before"] for r in reminders) == [60, 1440]
    [event] = await kafka.wait_for(of_meeting(meeting["id"], "MeetingScheduled"))
    assert event.data["title"] == row["title"] and event.data["capacity"] == 40
    assert event.subject_id == meeting["id"] and event.source == "events"
    assert event.data["public_url"].endswith(f"/events/{meeting['id']}")


async def test_update_raises_sequence_and_publishes_meeting_updated_with_what_changed(client, organiser, db, kafka):
    meeting = await schedule(client, organiser)
    later = datetime.fromisoformat(meeting["starts_at"]) + timedelta(days=1)
    response = await client.patch(
        f"/meetings/{meeting['id']}",
        json={"starts_at": later.isoformat(), "ends_at": (later + timedelta(hours=2)).isoformat(), "venue": "Hall 2"},
        headers=organiser,
    )
    assert response.status_code == 200, response.text
    assert response.json()["sequence"] == 1
    [event] = await kafka.wait_for(of_meeting(meeting["id"], "MeetingUpdated"))
    assert set(event.data["changed"]) == {"starts_at", "ends_at", "venue"} and event.data["sequence"] == 1
    due = await db.fetchval("SELECT due_at FROM reminders WHERE meeting_id = $1 AND minutes_before = 60",
                            meeting["id"])
    assert due == later - timedelta(minutes=60)


async def test_cancelling_publishes_meeting_cancelled_and_stops_reminders(client, organiser, db, kafka):
    meeting = await schedule(client, organiser)
    response = await client.post(f"/meetings/{meeting['id']}/cancel", json={"reason": "Venue flooded"},
                                 headers=organiser)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    [event] = await kafka.wait_for(of_meeting(meeting["id"], "MeetingCancelled"))
    assert event.data["reason"] == "Venue flooded" and event.data["sequence"] == 1
    statuses = await db.fetch("SELECT status FROM reminders WHERE meeting_id = $1", meeting["id"])
    assert {r["status"] for r in statuses} == {"cancelled"}


async def test_a_conference_lists_its_sessions_and_speakers(client, organiser):
    conference = await schedule(client, organiser, title="Midlands conference",
                                speakers=[{"name": "Asha Patel", "title": "Organiser, Leicester"}])
    session = await schedule(client, organiser, title="Workshop: door knocking", parent_meeting_id=conference["id"])
    page = await client.get(f"/events/{conference['id']}")
    assert "Asha Patel" in page.text and session["id"] in page.text


async def _nothing_stored(db, title: str) -> None:
    assert await db.fetchval("SELECT count(*) FROM meetings WHERE title = $1", title) == 0
    outbox = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE payload IS NOT NULL AND convert_from(payload, 'UTF8') LIKE $1", f"%{title}%"
    )
    assert outbox == 0


@pytest.mark.parametrize(
    ("case", "overrides", "field"),
    [
        ("end_before_start", lambda s: {"ends_at": (s - timedelta(hours=1)).isoformat()}, "ends_at"),
        ("negative_capacity", lambda s: {"capacity": -5}, "capacity"),
        ("zero_capacity", lambda s: {"capacity": 0}, "capacity"),
        ("in_the_past", lambda s: {"starts_at": (s - timedelta(days=30)).isoformat(),
                                   "ends_at": (s - timedelta(days=29)).isoformat()}, "starts_at"),
        ("in_person_without_venue", lambda s: {"venue": ""}, "venue"),
        ("online_without_link", lambda s: {"kind": "online", "venue": None}, "online_url"),
        ("unknown_kind", lambda s: {"kind": "carnival"}, "kind"),
        ("unknown_time_zone", lambda s: {"timezone": "Mars/Olympus"}, "timezone"),
        ("deadline_after_end", lambda s: {"rsvp_deadline": (s + timedelta(days=2)).isoformat()}, "rsvp_deadline"),
        ("group_without_id", lambda s: {"scope_type": "group"}, "scope_id"),
        ("reminder_out_of_range", lambda s: {"reminder_offsets": [0]}, "reminder_offsets"),
        ("empty_title", lambda s: {"title": "   "}, "title"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_bad_meeting_is_refused_with_a_clear_error_and_nothing_stored(client, organiser, db, case, overrides,
                                                                             field):
    body = meeting_body()
    start = datetime.fromisoformat(body["starts_at"])
    body.update(overrides(start))
    title = body["title"] if body["title"].strip() else None
    if title is None:
        body["description"] = marker = f"marker-{uuid.uuid4().hex}"
    response = await client.post("/meetings", json=body, headers=organiser)
    assert response.status_code == 422, response.text
    assert field in response.json()["errors"] and response.json()["detail"]
    await _nothing_stored(db, title or marker)


async def test_updating_to_end_before_start_changes_nothing(client, organiser, db):
    meeting = await schedule(client, organiser)
    start = datetime.fromisoformat(meeting["starts_at"])
    too_early = (start - timedelta(minutes=1)).isoformat()
    response = await client.patch(f"/meetings/{meeting['id']}", json={"ends_at": too_early}, headers=organiser)
    assert response.status_code == 422 and "ends_at" in response.json()["errors"]
    row = await db.fetchrow("SELECT ends_at, sequence FROM meetings WHERE id = $1", meeting["id"])
    assert row["sequence"] == 0 and row["ends_at"] == datetime.fromisoformat(meeting["ends_at"])
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'MeetingUpdated'",
                             meeting["id"]) == 0


async def test_scheduling_without_signing_in_is_refused(client, db):
    body = meeting_body()
    response = await client.post("/meetings", json=body)
    assert response.status_code == 401 and "Sign in" in response.json()["detail"]
    forged = await client.post("/meetings", json=body, headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401
    await _nothing_stored(db, body["title"])


async def test_an_organiser_cannot_schedule_outside_their_scope(client, db):
    region_organiser = organiser_headers("region", "region-east")
    body = meeting_body(scope_type="region", scope_id="region-west")
    response = await client.post("/meetings", json=body, headers=region_organiser)
    assert response.status_code == 403
    await _nothing_stored(db, body["title"])
    ok = await client.post("/meetings", json=meeting_body(scope_type="region", scope_id="region-east"),
                           headers=region_organiser)
    assert ok.status_code == 201, ok.text


async def test_organiser_pages_schedule_a_meeting_from_the_form(client, db):
    token = organiser_headers()["Authorization"][7:]
    cookies = {"gs_organiser": token}  # membership's /signin sets it, on the gateway's one origin
    start = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    end = (datetime.now(UTC) + timedelta(days=3, hours=2)).strftime("%Y-%m-%dT%H:%M")
    title = f"Form meeting {uuid.uuid4().hex[:6]}"
    form = {"title": title, "kind": "in_person", "scope": "network", "starts_at": start, "ends_at": end,
            "timezone": "Europe/London", "venue": "Library", "capacity": "", "reminders": "1440, 60"}
    bad = await client.post("/events/organise/new", data={**form, "ends_at": start}, cookies=cookies)
    assert bad.status_code == 422 and "The end must be after the start" in bad.text
    good = await client.post("/events/organise/new", data=form, cookies=cookies)
    assert good.status_code == 303
    assert await db.fetchval("SELECT capacity IS NULL FROM meetings WHERE title = $1", title) is True


async def test_the_form_offers_who_a_meeting_is_for_by_name_within_the_organisers_region_and_refuses_anything_else(
        client, db):
    tag = uuid.uuid4().hex[:6]
    region, group, elsewhere = (str(uuid.uuid4()) for _ in range(3))
    for unit_id, kind, name, parent in ((region, "region", f"Testshire {tag}", None),
                                        (group, "group", f"Testtown {tag}", region),
                                        (elsewhere, "region", f"Elsewhere {tag}", None)):
        await db.execute("INSERT INTO units (unit_id, kind, name, parent_id, slug) VALUES ($1, $2, $3, $4, $5)",
                         unit_id, kind, name, parent, f"slug-{tag}-{kind}")
    client.cookies.update({"gs_organiser": organiser_headers("region", region)["Authorization"][7:]})
    try:
        await _pick_by_name(client, db, tag, region, group, elsewhere)
    finally:
        client.cookies.clear()


async def _pick_by_name(client, db, tag: str, region: str, group: str, elsewhere: str) -> None:
    form_page = await client.get("/events/organise/new")
    assert form_page.status_code == 200
    assert f'<optgroup label="Testshire {tag}">' in form_page.text and f"Testtown {tag} (group)" in form_page.text
    assert f"Elsewhere {tag}" not in form_page.text and "The whole network" not in form_page.text
    assert " id</label>" not in form_page.text
    start = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    end = (datetime.now(UTC) + timedelta(days=3, hours=2)).strftime("%Y-%m-%dT%H:%M")
    title = f"Picked meeting {tag}"
    form = {"title": title, "kind": "in_person", "starts_at": start, "ends_at": end, "timezone": "Europe/London",
            "venue": "Library", "reminders": "60"}
    for refused_choice in (f"region:{elsewhere}", f"slug-{tag}-region", "network", ""):
        refused = await client.post("/events/organise/new", data={**form, "scope": refused_choice})
        assert refused.status_code == 422 and "Choose who it is for from the list" in refused.text
        assert f'value="{title}"' in refused.text  # what they typed is kept
    await _nothing_stored(db, title)
    chosen = await client.post("/events/organise/new", data={**form, "scope": f"group:{group}"})
    assert chosen.status_code == 303
    row = await db.fetchrow("SELECT scope_type, scope_id, region_id FROM meetings WHERE title = $1", title)
    assert (row["scope_type"], row["scope_id"], row["region_id"]) == ("group", group, region)
    listed = await client.get("/events/organise", params={"q": title})  # 25 a page: found by its title
    assert f"For the group Testtown {tag}" in listed.text and "0 going" in listed.text


async def test_organiser_pages_change_a_meeting_and_refuse_a_bad_change(client, organiser, db, kafka):
    meeting = await schedule(client, organiser, capacity=10)
    client.cookies.update({"gs_organiser": organiser["Authorization"][7:]})
    try:
        form_page = await client.get(f"/events/organise/{meeting['id']}/edit")
        assert form_page.status_code == 200 and f'value="{meeting["title"]}"' in form_page.text
        values = dict(re.findall(r'<input type="[^"]+" id="[^"]+" name="([^"]+)" value="([^"]*)"', form_page.text))
        values["kind"] = "in_person"
        textarea = re.search(r'<textarea[^>]*name="description"[^>]*>([^<]*)</textarea>', form_page.text)
        values["description"] = textarea[1]
        bad = await client.post(f"/events/organise/{meeting['id']}/edit", data={**values, "capacity": "-3"})
        assert bad.status_code == 422 and "Capacity must be a whole number" in bad.text
        assert await db.fetchval("SELECT sequence FROM meetings WHERE id = $1", meeting["id"]) == 0
        good = await client.post(f"/events/organise/{meeting['id']}/edit", data={**values, "capacity": "12"})
        assert good.status_code == 303
    finally:
        client.cookies.clear()
    row = await db.fetchrow("SELECT capacity, sequence, starts_at FROM meetings WHERE id = $1", meeting["id"])
    assert row["capacity"] == 12 and row["sequence"] == 1
    assert row["starts_at"] == datetime.fromisoformat(meeting["starts_at"])  # unchanged through the local-time form
    [event] = await kafka.wait_for(of_meeting(meeting["id"], "MeetingUpdated"))
    assert event.data["changed"] == ["capacity"]
