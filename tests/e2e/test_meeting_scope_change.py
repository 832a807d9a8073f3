"""A meeting's scope changed on its edit page (issue #16), through the gateway of the running system: the organiser
chooses by name among the units they look after; the members newly included are told once, those told already are
not told again, and the RSVPs stay; a choice outside their scope is a 422 page and changes nothing."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from deploy.local import launcher
from services.membership import seeds
from tests.support.inprocess import poll
from tests.support.mail import MailCatcher
from tests.support.organisers import organiser_headers

COVENTRY_REGION = seeds.unit_id("region", "coventry-warwickshire")
COVENTRY = seeds.unit_id("group", "coventry")
EAST_MIDLANDS = seeds.unit_id("region", "east-midlands")
SAME_ORIGIN = {"Origin": launcher.GATEWAY_URL}


async def _confirmed_member(gateway: httpx.AsyncClient, mail: MailCatcher, postcode: str) -> str:
    """Someone joins at `postcode` and confirms from their welcome email (announcements go to confirmed members)."""
    email = f"scope-{uuid.uuid4().hex[:10]}@example.org"
    joined = await gateway.post("/join", data={"name": "Test Member", "email": email, "postcode": postcode,
                                               "email_consent": "yes"})
    assert joined.status_code == 303, joined.text
    [welcome] = await mail.wait_for(email, timeout=120)
    confirm = re.search(r"/join/confirm\?token=([\w.\-]+)", welcome["text"])
    assert confirm, welcome["text"]
    assert (await gateway.post("/join/confirm", data={"token": confirm.group(1)})).status_code == 200
    return email


async def _announcements(mail: MailCatcher, email: str, title: str) -> int:
    return sum(1 for m in await mail.messages(email) if m["subject"].startswith(f"New: {title}"))


def _form(title: str, scope: str) -> dict[str, str]:
    start = datetime.now(UTC) + timedelta(days=5)
    end = start + timedelta(hours=2)
    return {"title": title, "description": "Planning the spring.", "kind": "in_person",
            "starts_at": start.strftime("%Y-%m-%dT%H:%M"), "ends_at": end.strftime("%Y-%m-%dT%H:%M"),
            "timezone": "Europe/London", "venue": "Friends Meeting House", "capacity": "", "rsvp_deadline": "",
            "online_url": "", "reminders": "60", "scope": scope}


async def _meeting(events_db: asyncpg.Connection, title: str) -> Any:
    query = "SELECT id, scope_type, scope_id, region_id, sequence FROM meetings WHERE title = $1"
    return await events_db.fetchrow(query, title)


async def test_moving_a_meeting_to_its_whole_region_tells_only_the_newly_included_and_keeps_the_rsvps(
    gateway: httpx.AsyncClient, mail: MailCatcher, events_db: asyncpg.Connection
) -> None:
    in_coventry = await _confirmed_member(gateway, mail, "CV1 2AB")
    in_leamington = await _confirmed_member(gateway, mail, "CV32 4AA")
    title = f"Spring planning {uuid.uuid4().hex[:6]}"
    gateway.cookies.set("gs_organiser", organiser_headers("region", COVENTRY_REGION)["Authorization"][7:])
    try:
        scheduled = await gateway.post("/events/organise/new", data=_form(title, f"group:{COVENTRY}"),
                                       headers=SAME_ORIGIN)
        assert scheduled.status_code == 303, scheduled.text
        meeting = await _meeting(events_db, title)
        await poll(lambda: _announcements(mail, in_coventry, title), timeout=90)
        rsvp = await gateway.post(f"/events/{meeting['id']}/rsvp",
                                  data={"name": "Guest Person", "email": f"guest-{uuid.uuid4().hex[:8]}@example.org"})
        assert rsvp.status_code == 303, rsvp.text

        edit = await gateway.get(f"/events/organise/{meeting['id']}/edit")
        assert edit.status_code == 200 and "Coventry and Warwickshire" in edit.text and "East Midlands" not in edit.text
        refused = await gateway.post(f"/events/organise/{meeting['id']}/edit",
                                     data=_form(title, f"region:{EAST_MIDLANDS}"), headers=SAME_ORIGIN)
        assert refused.status_code == 422 and "Choose who it is for from the list" in refused.text
        assert await _meeting(events_db, title) == meeting  # nothing changed, not even the sequence

        moved = await gateway.post(f"/events/organise/{meeting['id']}/edit",
                                   data=_form(title, f"region:{COVENTRY_REGION}"), headers=SAME_ORIGIN)
        assert moved.status_code == 303, moved.text
    finally:
        gateway.cookies.clear()
    after = await _meeting(events_db, title)
    assert (after["scope_type"], after["scope_id"], after["region_id"]) == ("region", COVENTRY_REGION, COVENTRY_REGION)
    await poll(lambda: _announcements(mail, in_leamington, title), timeout=90)
    await mail.settle(in_coventry, seconds=3)
    assert await _announcements(mail, in_coventry, title) == 1  # told when it was scheduled, not again
    assert await _announcements(mail, in_leamington, title) == 1
    going = await events_db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1 AND status = 'going'",
                                     meeting["id"])
    assert going == 1
