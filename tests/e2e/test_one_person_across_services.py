"""One person across the services (issue #15): what someone does with the address they joined with is theirs in
every service — whether they joined first or acted first — counted on the engagement ladder, out of the long tail,
in the dashboard's funnel, named at the check-in desk; and after erasure the link (the member id) stays while the
address goes. Everything through the gateway of the running system, as people and organisers use it."""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local import launcher
from services.events.views import member_token
from shared import tokens
from tests.support.everything import ask_path as _ask
from tests.support.everything import campaign as _campaign
from tests.support.everything import meeting as _meeting
from tests.support.inprocess import poll
from tests.support.joins import join
from tests.support.mail import MailCatcher
from tests.support.organisers import organiser_headers
from tests.support.people import unique_email


@pytest.fixture
def organiser() -> dict[str, str]:
    return organiser_headers()


async def _act_everywhere(gateway: httpx.AsyncClient, mail: MailCatcher, campaign: dict[str, Any],
                          meeting: dict[str, Any], *, name: str, email: str) -> None:
    """Sign the petition, make a pledge, write to their MP (confirming the letter from the emailed link, as every
    writer must) and RSVP, each time typing the same address."""
    for path, extra in ((_ask(campaign, "petition"), {}),
                        (_ask(campaign, "pledge"), {"pledge_text": "I will speak up for patients."}),
                        (_ask(campaign, "write_to_mp"), {"postcode": "NG7 2RD", "step": "send",
                                                         "letter_subject": "Racism in healthcare",
                                                         "letter_body": "Dear Chris Holloway,\n\nPlease act."})):
        response = await gateway.post(path, data={"name": name, "email": f"  {email.upper()} ", **extra})
        assert response.status_code == 303 and "/thanks" in response.headers["location"], response.text
    confirmation = await poll(lambda: _mail_with(mail, email, "Confirm your letter"), timeout=90)
    link = re.search(r"http\S+(/campaigns/letters/\S+)", confirmation["text"])
    assert link is not None
    sent = await gateway.post(link.group(1), headers={"Accept": "text/html"})
    assert sent.status_code == 200 and "Your letter is on its way" in sent.text
    rsvp = await gateway.post(f"/events/{meeting['id']}/rsvp", data={"name": name, "email": email})
    assert rsvp.status_code == 303, rsvp.text


async def _mail_with(mail: MailCatcher, email: str, subject_start: str) -> dict[str, Any] | None:
    found = [m for m in await mail.messages(email) if m["subject"].startswith(subject_start)]
    return found[-1] if found else None


async def _member_id(membership_db: asyncpg.Connection, email: str) -> str:
    return await poll(lambda: membership_db.fetchval("SELECT id FROM members WHERE email_normalised = $1", email))


async def _engagement(gateway: httpx.AsyncClient, organiser: dict[str, str], member_id: str) -> dict[str, Any]:
    response = await gateway.get(f"/campaigns/api/engagement/members/{member_id}", headers=organiser)
    return response.json() if response.status_code == 200 else {}


async def _funnel(gateway: httpx.AsyncClient, organiser: dict[str, str]) -> dict[str, int]:
    data = (await gateway.get("/dashboard/data.json", headers=organiser)).json()
    return {f["level"]: f["members"] for f in data["funnel"]}


async def _linked(campaigns_db: asyncpg.Connection, events_db: asyncpg.Connection, campaign: dict[str, Any],
                  meeting: dict[str, Any], member_id: str) -> bool:
    actions = await campaigns_db.fetch("SELECT member_id FROM actions WHERE campaign_id = $1", campaign["id"])
    rsvps = await events_db.fetch("SELECT member_id FROM rsvps WHERE meeting_id = $1", meeting["id"])
    return len(actions) == 3 and len(rsvps) == 1 and {r["member_id"] for r in [*actions, *rsvps]} == {member_id}


async def test_a_members_actions_and_rsvps_are_theirs_whether_they_joined_first_or_acted_first(
        gateway, mail, organiser, membership_db, campaigns_db, events_db):
    funnel_before = await _funnel(gateway, organiser)

    # Olive joins, then signs, pledges, writes to her MP and RSVPs with the same address.
    olive_email, olive_name = unique_email("olive"), f"Olive Morris {uuid.uuid4().hex[:6]}"
    assert await join(gateway, olive_email, name=olive_name) == 303
    olive = await _member_id(membership_db, olive_email)
    await poll(lambda: campaigns_db.fetchval("SELECT email_hash FROM members WHERE member_id = $1", olive))
    await poll(lambda: events_db.fetchval("SELECT email_hash FROM members WHERE member_id = $1", olive))
    olive_campaign, olive_meeting = await _campaign(gateway, organiser), await _meeting(gateway, organiser)
    await _act_everywhere(gateway, mail, olive_campaign, olive_meeting, name=olive_name, email=olive_email)

    # Darcus signs, pledges, writes and RSVPs first, and joins afterwards through the join form.
    darcus_email, darcus_name = unique_email("darcus"), f"Darcus Howe {uuid.uuid4().hex[:6]}"
    darcus_campaign, darcus_meeting = await _campaign(gateway, organiser), await _meeting(gateway, organiser)
    await _act_everywhere(gateway, mail, darcus_campaign, darcus_meeting, name=darcus_name, email=darcus_email)
    assert await join(gateway, darcus_email, name=darcus_name) == 303
    darcus = await _member_id(membership_db, darcus_email)

    for member_id, campaign, meeting in ((olive, olive_campaign, olive_meeting),
                                         (darcus, darcus_campaign, darcus_meeting)):
        assert await poll(lambda c=campaign, mt=meeting, m=member_id: _linked(campaigns_db, events_db, c, mt, m))
        # Three actions on the ladder: a participant at once (activist needs a meeting attended too).
        standing = await poll(lambda m=member_id: _standing_with(gateway, organiser, m, actions=3))
        assert standing["level"] == "participant"

    tail = (await gateway.get("/campaigns/api/engagement/long-tail", headers=organiser)).json()
    assert not {olive, darcus} & {m["member_id"] for m in tail["members"]}
    # The dashboard's funnel counts both above the first rung (its read model is built from the same events).
    funnel = await poll(lambda: _funnel_moved(gateway, organiser, funnel_before, "participant", 2))
    assert funnel["participant"] == funnel_before.get("participant", 0) + 2


async def _standing_with(gateway: httpx.AsyncClient, organiser: dict[str, str], member_id: str, *,
                         actions: int) -> dict[str, Any] | None:
    standing = await _engagement(gateway, organiser, member_id)
    return standing if standing.get("actions") == actions else None


async def _funnel_moved(gateway: httpx.AsyncClient, organiser: dict[str, str], before: dict[str, int], level: str,
                        by: int) -> dict[str, int] | None:
    funnel = await _funnel(gateway, organiser)
    return funnel if funnel.get(level, 0) - before.get(level, 0) >= by else None


async def test_the_check_in_desk_finds_a_member_who_rsvped_from_their_link_by_name_and_by_email(
        gateway, organiser, membership_db, events_db):
    email, name = unique_email("claudia"), f"Claudia Jones {uuid.uuid4().hex[:6]}"
    assert await join(gateway, email, name=name) == 303
    member_id = await _member_id(membership_db, email)
    await poll(lambda: events_db.fetchval("SELECT name IS NOT NULL FROM members WHERE member_id = $1", member_id))
    meeting = await _meeting(gateway, organiser)
    # From an email's member link: the RSVP form asks for nothing, so the RSVP itself holds no name.
    link = member_token(launcher.secret_key(), member_id)
    assert (await gateway.post(f"/events/{meeting['id']}/rsvp", data={"member": link})).status_code == 303
    assert await events_db.fetchval("SELECT name FROM rsvps WHERE meeting_id = $1", meeting["id"]) is None
    await poll(lambda: events_db.fetchval("SELECT key IS NOT NULL FROM member_keys WHERE key_id = $1", member_id))
    gateway.cookies.set("gs_organiser", organiser["Authorization"][7:])
    desk = f"/events/organise/{meeting['id']}/check-in"
    by_name = await gateway.get(desk, params={"search": name.split()[1].lower()})
    assert by_name.status_code == 200 and name in by_name.text and "(member)" not in by_name.text
    by_email = await gateway.get(desk, params={"search": email.upper()})
    assert name in by_email.text and email in by_email.text
    nobody = await gateway.get(desk, params={"search": "nobody-of-that-name"})
    assert name not in nobody.text and "Nobody found." in nobody.text


async def test_after_erasure_the_member_id_stays_on_what_they_did_and_their_address_is_gone(
        gateway, mail, organiser, membership_db, campaigns_db, events_db):
    email, name = unique_email("erased"), f"Erased Person {uuid.uuid4().hex[:6]}"
    campaign, meeting = await _campaign(gateway, organiser), await _meeting(gateway, organiser)
    await _act_everywhere(gateway, mail, campaign, meeting, name=name, email=email)
    assert await join(gateway, email, name=name) == 303
    member_id = await _member_id(membership_db, email)
    assert await poll(lambda: _linked(campaigns_db, events_db, campaign, meeting, member_id))
    await poll(lambda: _standing_with(gateway, organiser, member_id, actions=3))

    token = tokens.sign(launcher.secret_key(), tokens.PREFERENCES, {"m": member_id})
    asked = await gateway.post("/me/erase", data={"token": token, "confirm": "erase"})
    assert asked.status_code == 200 and "Check your email" in asked.text
    # The erasure is confirmed through the fresh link emailed to the address (its page, then its button).
    confirmation = await poll(lambda: _mail_with(mail, email, "Confirm:"), timeout=90)
    link = re.search(r"http\S+/me/confirm\?token=([\w.\-]+)", confirmation["text"])
    assert link is not None
    erased = await gateway.post("/me/confirm", data={"token": link.group(1)})
    assert erased.status_code == 200, erased.text
    await poll(lambda: campaigns_db.fetchval("SELECT count(*) = 0 FROM members WHERE member_id = $1", member_id))
    await poll(lambda: events_db.fetchval("SELECT count(*) = 0 FROM members WHERE member_id = $1", member_id))
    await poll(lambda: events_db.fetchval("SELECT bool_and(email IS NULL) FROM rsvps WHERE meeting_id = $1",
                                          meeting["id"]))
    await poll(lambda: campaigns_db.fetchval("SELECT bool_and(email IS NULL) FROM actions WHERE campaign_id = $1",
                                             campaign["id"]))
    # The link stays: what they did is still counted as one member's.
    assert await _linked(campaigns_db, events_db, campaign, meeting, member_id)
    facts = await campaigns_db.fetchval("SELECT count(*) FROM engagement_facts WHERE member_id = $1", member_id)
    assert facts == 3
    # The address, the name and the letter are gone from every row that held them.
    for db, table in ((campaigns_db, "actions"), (events_db, "rsvps")):
        rows = await db.fetch(f"SELECT * FROM {table} WHERE member_id = $1", member_id)
        text = repr([dict(r) for r in rows]).lower()
        assert email not in text and name.lower() not in text and "please act" not in text
    for db in (campaigns_db, events_db):
        assert await db.fetchval("SELECT key FROM member_keys WHERE key_id = $1", member_id) is None
