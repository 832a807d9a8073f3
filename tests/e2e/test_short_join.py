"""The short join (issue #16), through the gateway of the running system: the form asks five things; its thank-you
page names the local group the postcode gives, shows meetings near them (from membership's read model of events'
MeetingScheduled) and offers "tell us more", kept for the join this browser just made, once, without typing the
address again."""

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
from tests.support.organisers import organiser_headers
from tests.support.people import unique_email

COVENTRY = seeds.unit_id("group", "coventry")
EAST_MIDLANDS = seeds.unit_id("region", "east-midlands")
SHORT_FORM = {"name", "email", "postcode", "engagement_level", "email_consent", "consent_version", "website"}


async def _meeting_for(gateway: httpx.AsyncClient, scope_type: str, scope_id: str) -> str:
    start = (datetime.now(UTC) + timedelta(days=6)).replace(microsecond=0)
    title = f"Near you {uuid.uuid4().hex[:8]}"
    response = await gateway.post("/meetings", headers=organiser_headers(), json={
        "title": title, "kind": "in_person", "scope_type": scope_type, "scope_id": scope_id,
        "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat(), "venue": "Library"})
    assert response.status_code == 201, response.text
    return title


async def _thanks_showing(gateway: httpx.AsyncClient, title: str) -> str | None:
    page = await gateway.get("/join/thanks")
    return page.text if title in page.text else None


async def _member(membership_db: asyncpg.Connection, email: str) -> dict[str, Any]:
    row = await membership_db.fetchrow("SELECT * FROM members WHERE email_normalised = $1", email)
    groups = await membership_db.fetch(
        "SELECT g.slug FROM member_groups mg JOIN local_groups g ON g.id = mg.group_id WHERE mg.member_id = $1"
        " ORDER BY g.slug", row["id"])
    return {**dict(row), "groups": [g["slug"] for g in groups]}


async def test_the_short_join_then_next_steps_near_them_and_tell_us_more_without_their_address(
    gateway: httpx.AsyncClient, membership_db: asyncpg.Connection
) -> None:
    near = await _meeting_for(gateway, "group", COVENTRY)
    elsewhere = await _meeting_for(gateway, "region", EAST_MIDLANDS)
    form = await gateway.get("/join")
    fields = form.text[form.text.index('<form method="post" action="/join"'):]
    assert set(re.findall(r'name="([a-z_]+)"', fields[:fields.index("</form>")])) == SHORT_FORM
    email = unique_email("short")
    joined = await gateway.post("/join", data={"name": "Jayaben Desai", "email": email, "postcode": "CV1 2AB",
                                               "engagement_level": "take_action", "email_consent": "yes"})
    assert joined.status_code == 303 and joined.headers["location"] == "/join/thanks"

    page = await poll(lambda: _thanks_showing(gateway, near), timeout=60)  # once membership has heard of it
    assert "Your local group: Coventry" in page and elsewhere not in page
    assert "Tell us more" in page and 'action="/join/more"' in page and email not in page

    more = {"interests": ["racism-at-work"], "groups": ["walsall"], "subteams": ["outreach"], "skills": "Welsh",
            "time_available": "Saturday mornings"}
    told = await gateway.post("/join/more", data=more)
    assert told.status_code == 303 and told.headers["location"] == "/join/thanks"
    member = await _member(membership_db, email)
    assert member["interests"] == ["racism-at-work"] and member["groups"] == ["coventry", "walsall"]
    assert member["skills"] == "Welsh" and member["time_available"] == "Saturday mornings"
    assert member["name"] == "Jayaben Desai" and member["status"] == "pending"  # nothing else changed
    after = await gateway.get("/join/thanks")
    assert "we have kept what you told us" in after.text and 'action="/join/more"' not in after.text

    again = await gateway.post("/join/more", data={"skills": "Something else"})
    assert again.status_code == 400 and (await _member(membership_db, email)) == member  # taken once


async def test_tell_us_more_with_a_mistake_comes_back_with_what_was_typed_and_keeps_nothing(
    gateway: httpx.AsyncClient, membership_db: asyncpg.Connection
) -> None:
    await gateway.get("/join")
    email = unique_email("more-bad")
    await gateway.post("/join", data={"name": "Asquith Xavier", "email": email, "postcode": "NG1 5FS",
                                      "email_consent": "yes"})
    before = await _member(membership_db, email)
    bad = await gateway.post("/join/more", data={"groups": ["atlantis"], "skills": "Typing"})
    assert bad.status_code == 422 and "Choose local groups from the list" in bad.text
    assert ">Typing</textarea>" in bad.text
    assert await _member(membership_db, email) == before
    assert (await gateway.post("/join/more", data={"skills": "Typing"})).status_code == 303  # still open


async def test_without_a_join_from_this_browser_there_is_nothing_to_tell_more_to(membership_db: asyncpg.Connection
                                                                               ) -> None:
    async with httpx.AsyncClient(base_url=launcher.GATEWAY_URL) as stranger:
        page = await stranger.get("/join/thanks")
        assert page.status_code == 200 and "Thank you for joining" in page.text and "/join/more" not in page.text
        refused = await stranger.post("/join/more", data={"skills": "Lock picking"})
        assert refused.status_code == 400 and "We could not keep this" in refused.text
    assert await membership_db.fetchval("SELECT count(*) FROM members WHERE skills = 'Lock picking'") == 0
