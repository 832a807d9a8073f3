"""Calendars: an iCalendar file per meeting and a feed per scope, read back with the icalendar parser."""

from __future__ import annotations

import uuid
from datetime import datetime

from icalendar import Calendar

from tests.events.conftest import schedule


def _parse(response) -> Calendar:
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/calendar")
    return Calendar.from_ical(response.content)


def _event(cal: Calendar, meeting_id: str):
    [event] = [e for e in cal.walk("VEVENT") if meeting_id in str(e["UID"])]
    return event


async def test_a_meetings_ics_has_a_stable_uid_its_zone_and_a_sequence_raised_on_update(client, organiser):
    meeting = await schedule(client, organiser, title="Spring assembly")
    first = _parse(await client.get(f"/calendar/meetings/{meeting['id']}.ics"))
    event = _event(first, meeting["id"])
    assert str(event["SUMMARY"]) == "Spring assembly" and int(event["SEQUENCE"]) == 0
    assert str(event["STATUS"]) == "CONFIRMED"
    [tz] = first.walk("VTIMEZONE")
    assert str(tz["TZID"]) == "Europe/London"
    assert event["DTSTART"].params["TZID"] == "Europe/London"
    assert event.decoded("DTSTART") == datetime.fromisoformat(meeting["starts_at"])
    await client.patch(f"/meetings/{meeting['id']}", json={"title": "Spring assembly (moved)"}, headers=organiser)
    second = _event(_parse(await client.get(f"/calendar/meetings/{meeting['id']}.ics")), meeting["id"])
    assert second["UID"] == event["UID"] and int(second["SEQUENCE"]) == 1
    assert str(second["SUMMARY"]) == "Spring assembly (moved)"


async def test_a_cancelled_meeting_stays_in_the_feed_as_cancelled(client, organiser):
    group = f"group-{uuid.uuid4().hex[:6]}"
    kept = await schedule(client, organiser, scope_type="group", scope_id=group)
    gone = await schedule(client, organiser, scope_type="group", scope_id=group)
    await client.post(f"/meetings/{gone['id']}/cancel", json={"reason": "Clash"}, headers=organiser)
    feed = _parse(await client.get(f"/calendar/group/{group}.ics"))
    assert str(_event(feed, kept["id"])["STATUS"]) == "CONFIRMED"
    cancelled = _event(feed, gone["id"])
    assert str(cancelled["STATUS"]) == "CANCELLED" and int(cancelled["SEQUENCE"]) == 1
    assert len(feed.walk("VTIMEZONE")) == 1


async def test_the_network_feed_holds_every_meeting_and_a_region_feed_its_own(client, organiser):
    region = f"region-{uuid.uuid4().hex[:6]}"
    regional = await schedule(client, organiser, scope_type="region", scope_id=region)
    elsewhere = await schedule(client, organiser, scope_type="region", scope_id="region-elsewhere")
    network = _parse(await client.get("/calendar/network.ics"))
    assert _event(network, regional["id"]) and _event(network, elsewhere["id"])
    region_feed = _parse(await client.get(f"/calendar/region/{region}.ics"))
    uids = [str(e["UID"]) for e in region_feed.walk("VEVENT")]
    assert any(regional["id"] in u for u in uids) and not any(elsewhere["id"] in u for u in uids)


async def test_an_unknown_meeting_has_no_calendar_file(client):
    assert (await client.get(f"/calendar/meetings/{uuid.uuid4()}.ics")).status_code == 404
