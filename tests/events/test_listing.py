"""The public listing at /events: upcoming meetings, filtered by region, group, kind and date."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.events.conftest import organiser_headers, schedule


def _at(days: int) -> dict[str, str]:
    start = (datetime.now(UTC) + timedelta(days=days)).replace(hour=18, minute=0, second=0, microsecond=0)
    return {"starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat()}


async def test_listing_filters_by_region_kind_and_date(client, organiser):
    region = f"region-{uuid.uuid4().hex[:6]}"
    soon = await schedule(client, organiser, scope_type="region", scope_id=region, **_at(3))
    later_online = await schedule(client, organiser, scope_type="region", scope_id=region, kind="online",
                                  venue=None, online_url="https://meet.example.org/x", **_at(20))
    other_region = await schedule(client, organiser, scope_type="region", scope_id="region-other", **_at(3))
    listing = (await client.get("/events", params={"region": region})).text
    assert soon["title"] in listing and later_online["title"] in listing and other_region["title"] not in listing
    online = (await client.get("/events", params={"region": region, "kind": "online"})).text
    assert later_online["title"] in online and soon["title"] not in online
    day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    dated = (await client.get("/events", params={"region": region, "date_from": day, "date_to": day})).text
    assert soon["title"] in dated and later_online["title"] not in dated


async def test_cancelled_meetings_leave_the_listing(client, organiser):
    meeting = await schedule(client, organiser)
    await client.post(f"/meetings/{meeting['id']}/cancel", json={}, headers=organiser)
    assert meeting["title"] not in (await client.get("/events")).text
    page = await client.get(f"/events/{meeting['id']}")
    assert page.status_code == 200 and "This meeting has been cancelled" in page.text


async def test_a_bad_date_filter_says_what_to_type(client):
    response = await client.get("/events", params={"date_from": "next tuesday"})
    assert response.status_code == 400 and "Enter the first date like 2027-03-14" in response.text


async def test_an_organiser_cancels_from_their_meetings_page(client, organiser, db):
    meeting = await schedule(client, organiser)
    client.cookies.update({"gs_organiser": organiser["Authorization"][7:]})
    try:
        listed = await client.get("/events/organise", params={"q": meeting["title"]})  # 25 a page: by its title
        assert meeting["title"] in listed.text and meeting["check_in_code"] in listed.text
        confirm = await client.get(f"/events/organise/{meeting['id']}/cancel")
        assert confirm.status_code == 200 and "Yes, cancel the meeting" in confirm.text
        assert await db.fetchval("SELECT status FROM meetings WHERE id = $1", meeting["id"]) == "scheduled"
        response = await client.post(f"/events/organise/{meeting['id']}/cancel", data={"reason": "Snow"})
    finally:
        client.cookies.clear()
    assert response.status_code == 303
    assert await db.fetchval("SELECT cancel_reason FROM meetings WHERE id = $1", meeting["id"]) == "Snow"


async def test_an_organisers_meetings_come_25_a_page_those_to_come_soonest_first_then_those_over_latest_first(
        client, organiser, db):
    region = f"region-{uuid.uuid4().hex[:6]}"
    coming = [await schedule(client, organiser, scope_type="region", scope_id=region, title=f"Coming {region} {d:02}",
                             **_at(d)) for d in range(1, 28)]
    over = []
    for d in (3, 1, 2):  # meetings that ended days ago, stored out of order
        start = datetime.now(UTC) - timedelta(days=d, hours=3)
        over.append(f"Over {region} {d}")
        await db.execute(
            "INSERT INTO meetings (id, title, kind, scope_type, scope_id, region_id, starts_at, ends_at, check_in_code)"
            " VALUES ($1, $2, 'in_person', 'region', $3, $3, $4, $5, 'PAST01')",
            str(uuid.uuid4()), over[-1], region, start, start + timedelta(hours=2))
    mine = organiser_headers("region", region)

    first = await client.get("/events/organise", headers=mine)
    assert first.status_code == 200 and "Still to come" in first.text and ">Over<" not in first.text
    shown = [m["title"] for m in coming if m["title"] in first.text]
    assert shown == [m["title"] for m in coming[:25]]
    assert first.text.index(coming[0]["title"]) < first.text.index(coming[24]["title"])  # soonest first
    assert "0 going" in first.text and 'rel="next" href="/events/organise?page=2"' in first.text

    second = await client.get("/events/organise", params={"page": 2}, headers=mine)
    assert coming[25]["title"] in second.text and coming[26]["title"] in second.text
    assert coming[24]["title"] not in second.text and ">Over<" in second.text
    positions = [second.text.index(f"Over {region} {d}<") for d in (1, 2, 3)]
    assert positions == sorted(positions)  # latest first
    assert 'rel="prev" href="/events/organise?page=1"' in second.text and 'rel="next"' not in second.text

    found = await client.get("/events/organise", params={"q": f"over {region} 2"}, headers=mine)
    assert f"Over {region} 2<" in found.text and coming[0]["title"] not in found.text
    beyond = await client.get("/events/organise", params={"page": "nine"}, headers=mine)
    assert beyond.status_code == 200 and coming[0]["title"] in beyond.text  # a page that is not a number: the first
