"""iCalendar (RFC 5545): a file per meeting and a subscribable feed per scope.

The UID is the meeting's id at the service's host, so it never changes; SEQUENCE is the meeting's,
raised on each update and on cancellation; a cancelled meeting stays in the feed with STATUS:CANCELLED
so calendars remove it. Times are given in the meeting's zone with its VTIMEZONE.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import Response
from icalendar import Calendar, Event, vText

from services.events.deps import BaseUrl, MeetingsDep, SettingsDep
from services.events.domain import MeetingNotFound
from services.events.meetings import Meetings

router = APIRouter(prefix="/calendar", tags=["calendars"])
ICS = "text/calendar; charset=utf-8"
FEED_LOOKBACK = timedelta(days=60)


def build_calendar(meetings: Sequence[Any], *, base_url: str, name: str) -> bytes:
    host = urlsplit(base_url).hostname or "groundswell"
    cal = Calendar()
    cal.add("prodid", "-//Groundswell//Events//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", name)
    for m in meetings:
        zone = ZoneInfo(m.timezone)
        event = Event()
        event.add("uid", f"meeting-{m.id}@{host}")
        event.add("dtstamp", (m.updated_at or datetime.now(UTC)).astimezone(UTC))
        event.add("last-modified", (m.updated_at or datetime.now(UTC)).astimezone(UTC))
        event.add("created", m.created_at.astimezone(UTC))
        event.add("dtstart", m.starts_at.astimezone(zone))
        event.add("dtend", m.ends_at.astimezone(zone))
        event.add("summary", m.title)
        if m.description:
            event.add("description", m.description)
        location = m.venue or ("Online" if m.kind == "online" else None)
        if location:
            event.add("location", vText(location))
        event.add("url", f"{base_url}/events/{m.id}")
        event.add("sequence", m.sequence)
        event.add("status", "CANCELLED" if m.status == "cancelled" else "CONFIRMED")
        event.add("transp", "OPAQUE")
        cal.add_component(event)
    cal.add_missing_timezones()
    return cal.to_ical()


@router.get("/meetings/{meeting_id}.ics")
async def meeting_ics(meetings: MeetingsDep, base_url: BaseUrl, meeting_id: str) -> Response:
    try:
        meeting = await meetings.get(meeting_id)
    except MeetingNotFound:
        return Response("There is no meeting with that id\n", status_code=404, media_type="text/plain")
    body = build_calendar([meeting], base_url=base_url, name=meeting.title)
    return Response(body, media_type=ICS, headers={"Content-Disposition": f'attachment; filename="{meeting_id}.ics"'})


async def _feed(meetings: Meetings, base_url: str, name: str, **filters: Any) -> Response:
    since = (datetime.now(UTC) - FEED_LOOKBACK).date()
    rows = await meetings.find(include_cancelled=True, on_or_after=since, upcoming_only=False, limit=2000, **filters)
    body = build_calendar(rows, base_url=base_url, name=name)
    return Response(body, media_type=ICS)


@router.get("/network.ics")
async def network_feed(meetings: MeetingsDep, settings: SettingsDep, base_url: BaseUrl) -> Response:
    """Every meeting in the network."""
    return await _feed(meetings, base_url, f"{settings.network_name}: all events")


@router.get("/{scope_type}/{scope_id}.ics")
async def scope_feed(meetings: MeetingsDep, settings: SettingsDep, base_url: BaseUrl, scope_type: str,
                     scope_id: str) -> Response:
    """A region's feed holds its own, its groups' and network-wide meetings; a group's, its own and network-wide."""
    network = settings.network_name
    if scope_type == "region":
        return await _feed(meetings, base_url, f"{network}: region events", region_id=scope_id)
    if scope_type == "group":
        return await _feed(meetings, base_url, f"{network}: group events", group_id=scope_id)
    if scope_type == "subteam":
        return await _feed(meetings, base_url, f"{network}: sub-team events", scope_type="subteam", scope_id=scope_id)
    return Response("Feeds are per region, group or subteam, or /calendar/network.ics\n", status_code=404,
                    media_type="text/plain")
