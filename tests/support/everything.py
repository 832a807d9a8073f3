"""A member who did one of everything, through the gateway as a person and an organiser would: joined, signed a
petition, made a pledge, wrote to their MP (and confirmed the letter, so it went with a copy to them), RSVPed and
was checked in. Both the data download and erasure are tested against such a person."""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from deploy.local import launcher
from shared import tokens
from tests.support.inprocess import poll
from tests.support.joins import join
from tests.support.people import unique_email

SAMPLE_MPS = Path(__file__).resolve().parents[2] / "services" / "campaigns" / "data" / "mps_sample.csv"
LETTER = "Dear Chris Holloway,\n\nPlease act on racism in healthcare.\n\n"


@dataclass(frozen=True)
class Person:
    member_id: str
    name: str
    email: str
    postcode: str
    campaign: dict[str, Any]
    meeting: dict[str, Any]


def rare_postcode() -> str:
    """A postcode in Nottingham South (the sample MPs' NG7 district) that no other test is likely to use."""
    unit = random.choice(string.digits) + "".join(random.choices("ABDEFGHJLNPQRSTUWXYZ", k=2))
    return f"NG7 {unit}"


async def campaign(gateway: httpx.AsyncClient, organiser: dict[str, str]) -> dict[str, Any]:
    loaded = await gateway.put("/campaigns/api/mps", params={"replace": "false"}, content=SAMPLE_MPS.read_bytes(),
                               headers=organiser)
    assert loaded.status_code == 200, loaded.text
    response = await gateway.post("/campaigns/api/campaigns", headers=organiser, json={
        "title": f"Equal care {uuid.uuid4().hex[:8]}", "goal": "Equal care", "summary": "Racism harms patients.",
        "issues": ["racism in healthcare"], "asks": [
            {"kind": "petition", "title": "Sign: equal care", "body": "We call on the NHS to act.",
             "addressee": "The Secretary of State for Health"},
            {"kind": "pledge", "title": "Pledge to speak up", "body": "I pledge to ..."},
            {"kind": "write_to_mp", "title": "Write to your MP", "letter_subject": "Racism in healthcare",
             "body": "Dear {mp_name},\n\nPlease act.\n\n{name}"}]})
    assert response.status_code == 201, response.text
    return response.json()


async def meeting(gateway: httpx.AsyncClient, organiser: dict[str, str]) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    response = await gateway.post("/meetings", headers=organiser, json={
        "title": f"Organising meeting {uuid.uuid4().hex[:8]}", "description": "Plan together.", "kind": "in_person",
        "scope_type": "network", "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat(),
        "venue": "Friends Meeting House, Birmingham", "capacity": 50})
    assert response.status_code == 201, response.text
    return response.json()


def ask_path(campaign: dict[str, Any], kind: str) -> str:
    ask = next(a for a in campaign["asks"] if a["kind"] == kind)
    return f"/campaigns/{campaign['id']}/asks/{ask['id']}"


async def one_of_everything(gateway: httpx.AsyncClient, organiser: dict[str, str], membership_db: asyncpg.Connection,
                            campaigns_db: asyncpg.Connection, events_db: asyncpg.Connection,
                            notifications_db: asyncpg.Connection, prefix: str) -> Person:
    """Join, sign, pledge, write to the MP (confirmed: the letter and its copy are sent), RSVP, be checked in;
    returns once every service holds all of it, linked to the member."""
    email, name, postcode = unique_email(prefix), f"Rosa Parks {uuid.uuid4().hex[:8]}", rare_postcode()
    assert await join(gateway, email, name=name, postcode=postcode) == 303
    member_id = await poll(lambda: membership_db.fetchval("SELECT id FROM members WHERE email_normalised = $1", email))
    the_campaign, the_meeting = await campaign(gateway, organiser), await meeting(gateway, organiser)
    for path, extra in ((ask_path(the_campaign, "petition"), {"comment": "For my mother."}),
                        (ask_path(the_campaign, "pledge"), {"pledge_text": "I will speak up for patients."}),
                        (ask_path(the_campaign, "write_to_mp"), {"postcode": postcode, "step": "send",
                                                                 "letter_subject": "Racism in healthcare",
                                                                 "letter_body": LETTER + name})):
        response = await gateway.post(path, data={"name": name, "email": email, **extra})
        assert response.status_code == 303 and "/thanks" in response.headers["location"], response.text
    letter = await poll(lambda: campaigns_db.fetchval(
        "SELECT id FROM actions WHERE campaign_id = $1 AND kind = 'write_to_mp'", the_campaign["id"]))
    confirm = f"/campaigns/letters/{tokens.sign(launcher.secret_key(), tokens.CONFIRM_LETTER, {'a': letter})}"
    assert (await gateway.post(confirm)).status_code == 200
    assert (await gateway.post(f"/events/{the_meeting['id']}/rsvp", data={"name": name, "email": email})
            ).status_code == 303
    rsvp = await poll(lambda: events_db.fetchval("SELECT id FROM rsvps WHERE meeting_id = $1", the_meeting["id"]))
    attended = await gateway.post(f"/meetings/{the_meeting['id']}/rsvps/{rsvp}/attendance", headers=organiser)
    assert attended.status_code in (200, 204), attended.text

    async def everywhere() -> bool:
        actions = await campaigns_db.fetch("SELECT member_id FROM actions WHERE campaign_id = $1", the_campaign["id"])
        rsvps = await events_db.fetch("SELECT member_id, attended_at FROM rsvps WHERE id = $1", rsvp)
        letters = await notifications_db.fetchval(
            "SELECT count(*) FROM deliveries WHERE subject_ref = $1 AND kind IN ('mp_letter', 'mp_letter_copy')",
            letter)
        return (len(actions) == 3 and {r["member_id"] for r in actions} == {member_id}
                and rsvps[0]["member_id"] == member_id and rsvps[0]["attended_at"] is not None and letters == 2)

    assert await poll(everywhere, 90)
    return Person(member_id, name, email, postcode, the_campaign, the_meeting)
