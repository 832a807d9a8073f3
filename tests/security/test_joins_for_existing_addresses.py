"""Attacks with someone else's address, through the gateway (issue #14, points 1, 7 and 8; decision 0006): joining
again with a member's address changes nothing about them until they confirm by a POST from the page the emailed
link opens; the public answer is the same as for a new address; a left member stays left; the preferences link
cannot download or erase without a fresh emailed confirmation; the double opt-in link's GET confirms nothing."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import asyncpg
import httpx

from deploy.local import launcher
from shared import tokens
from tests.support.mail import MailCatcher

BIRMINGHAM = "B15 2TT"


def unique_email(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.org"


def form(email: str, **overrides: Any) -> dict[str, Any]:
    return {"name": "Olive Morris", "email": email, "postcode": BIRMINGHAM, "email_consent": "yes", **overrides}


def link_token(message: dict[str, Any], path: str) -> str:
    found = re.search(re.escape(path) + r"\?token=([\w.\-]+)", message["text"])
    assert found, f"no {path} link in {message['subject']!r}"
    return found.group(1)


async def the_mail(mail: MailCatcher, email: str, subject_starts: str, count: int = 1) -> dict[str, Any]:
    """The `count`th email to `email` whose subject starts so (waiting up to 30 s for it)."""
    found: list[dict[str, Any]] = []
    for _ in range(150):
        found = [m for m in await mail.messages(email) if m["subject"].startswith(subject_starts)]
        if len(found) >= count:
            return found[count - 1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(found)} email(s) {subject_starts!r} to {email}, not {count}")


async def snapshot(db: asyncpg.Connection, email: str) -> dict[str, Any]:
    """Everything a join could change about the member with this address."""
    member = await db.fetchrow("SELECT * FROM members WHERE email_normalised = $1", email)
    assert member is not None
    groups = await db.fetch("SELECT group_id FROM member_groups WHERE member_id = $1 ORDER BY group_id", member["id"])
    subteams = await db.fetch(
        "SELECT subteam_id FROM member_subteams WHERE member_id = $1 ORDER BY subteam_id", member["id"]
    )
    consents = await db.fetchval("SELECT count(*) FROM consent_records WHERE member_id = $1", member["id"])
    return {
        "member": dict(member),
        "groups": [r["group_id"] for r in groups],
        "subteams": [r["subteam_id"] for r in subteams],
        "consents": consents,
    }


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """A response without what differs between any two requests (the date, the request's id)."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in ("date", "x-request-id")]
    return response.status_code, headers, response.content


async def a_member(gateway: httpx.AsyncClient, mail: MailCatcher, db: asyncpg.Connection, prefix: str) -> str:
    email = unique_email(prefix)
    assert (await gateway.post("/join", data=form(email, name="Victim Person"))).status_code == 303
    await the_mail(mail, email, "Welcome")
    return email


async def test_a_join_with_a_members_address_changes_nothing_answers_as_for_anyone_and_waits_for_a_posted_confirmation(
    gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection
) -> None:
    victim = await a_member(gateway, mail, membership_db, "victim")
    before = await snapshot(membership_db, victim)
    hostile = {"name": "Renamed By Attacker", "postcode": "NG1 5FS", "groups": ["nottingham"], "subteams": ["research"]}

    attack = await gateway.post("/join", data=form(f" {victim.upper()} ", **hostile))
    fresh = await gateway.post("/join", data=form(unique_email("stranger"), **hostile))
    assert comparable(attack) == comparable(fresh)
    assert attack.status_code == 303 and attack.headers["location"] == "/join/thanks"
    as_json = {**hostile, "email_consent": True}
    attack_json = await gateway.post("/join", json={**as_json, "email": victim})
    fresh_json = await gateway.post("/join", json={**as_json, "email": unique_email("stranger")})
    assert comparable(attack_json) == comparable(fresh_json) and attack_json.status_code == 202

    # Two joins, two emails; the newer request replaced the older (its link leads nowhere now).
    message = await the_mail(mail, victim, "Confirm the changes", count=2)
    assert "Nothing about your membership has changed" in message["text"] and "Renamed" not in message["text"]
    assert await snapshot(membership_db, victim) == before

    token = link_token(message, "/join/changes")
    opened = await gateway.get("/join/changes", params={"token": token})  # what a mail scanner does
    assert opened.status_code == 200 and "Renamed By Attacker" in opened.text and "Nottingham" in opened.text
    assert await snapshot(membership_db, victim) == before

    confirmed = await gateway.post("/join/changes", data={"token": token})
    assert confirmed.status_code == 200 and "up to date" in confirmed.text
    after = await snapshot(membership_db, victim)
    assert after["member"]["name"] == "Renamed By Attacker" and after["member"]["postcode"] == "NG1 5FS"
    assert len(after["groups"]) == len(before["groups"]) + 1 and len(after["subteams"]) == 1
    assert after["member"]["status"] == "confirmed"  # the link reached the address: it is confirmed too

    used_again = await gateway.post("/join/changes", data={"token": token})
    assert used_again.status_code == 400 and await snapshot(membership_db, victim) == after


async def test_someone_who_left_is_not_brought_back_or_reconsented_until_they_confirm(
    gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection
) -> None:
    victim = await a_member(gateway, mail, membership_db, "leaver")
    member_id = (await snapshot(membership_db, victim))["member"]["id"]
    preferences = tokens.sign(launcher.secret_key(), tokens.PREFERENCES, {"m": member_id})
    assert (await gateway.post("/me/leave", data={"token": preferences})).status_code == 200
    left = await snapshot(membership_db, victim)
    assert left["member"]["status"] == "left" and left["member"]["email_consent"] is False

    assert (await gateway.post("/join", data=form(victim, groups=["coventry"]))).status_code == 303
    message = await the_mail(mail, victim, "Confirm the changes")
    assert "bring you back" in message["text"]
    token = link_token(message, "/join/changes")
    assert (await gateway.get("/join/changes", params={"token": token})).status_code == 200
    assert await snapshot(membership_db, victim) == left

    assert (await gateway.post("/join/changes", data={"token": token})).status_code == 200
    back = await snapshot(membership_db, victim)
    assert back["member"]["status"] == "confirmed" and back["member"]["email_consent"] is True


async def test_a_newer_join_replaces_the_older_request_and_an_expired_one_changes_nothing(
    gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection
) -> None:
    victim = await a_member(gateway, mail, membership_db, "twice")
    before = await snapshot(membership_db, victim)
    await gateway.post("/join", data=form(victim, name="First Attempt"))
    older = link_token(await the_mail(mail, victim, "Confirm the changes"), "/join/changes")
    await gateway.post("/join", data=form(victim, name="Second Attempt"))
    newer = link_token(await the_mail(mail, victim, "Confirm the changes", count=2), "/join/changes")

    replaced = await gateway.post("/join/changes", data={"token": older})
    assert replaced.status_code == 400 and "Nothing about your membership has changed" in replaced.text
    assert await snapshot(membership_db, victim) == before

    await membership_db.execute(
        "UPDATE member_requests SET expires_at = now() - interval '1 second' WHERE member_id = $1",
        before["member"]["id"],
    )
    assert (await gateway.get("/join/changes", params={"token": newer})).status_code == 400
    assert (await gateway.post("/join/changes", data={"token": newer})).status_code == 400
    assert await snapshot(membership_db, victim) == before


async def test_opening_the_double_opt_in_link_confirms_nothing_its_button_does(
    gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection
) -> None:
    email = unique_email("optin")
    await gateway.post("/join", data=form(email))
    token = link_token(await the_mail(mail, email, "Welcome"), "/join/confirm")

    opened = await gateway.get("/join/confirm", params={"token": token})
    assert opened.status_code == 200 and 'action="/join/confirm"' in opened.text
    assert (await snapshot(membership_db, email))["member"]["status"] == "pending"

    pressed = await gateway.post("/join/confirm", data={"token": token})
    assert pressed.status_code == 200 and "confirmed" in pressed.text
    assert (await snapshot(membership_db, email))["member"]["status"] == "confirmed"


async def test_the_preferences_link_alone_cannot_download_or_erase(
    gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection
) -> None:
    email = await a_member(gateway, mail, membership_db, "rights")
    member_id = (await snapshot(membership_db, email))["member"]["id"]
    preferences = tokens.sign(launcher.secret_key(), tokens.PREFERENCES, {"m": member_id})

    page = await gateway.get("/me/data", params={"token": preferences})
    asked = await gateway.post("/me/data", data={"token": preferences})
    for response in (page, asked):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert email not in response.text and "attachment" not in response.headers.get("content-disposition", "")
    assert "Check your email" in asked.text
    download = link_token(await the_mail(mail, email, "Confirm: download"), "/me/confirm")
    assert (await gateway.get("/me/confirm", params={"token": download})).headers["content-type"].startswith(
        "text/html"
    )
    gathering = await gateway.post("/me/confirm", data={"token": download})
    assert gathering.status_code == 200 and "We are gathering your data" in gathering.text
    ready = link_token(await the_mail(mail, email, "Your data from"), "/me/download")
    data = await gateway.post("/me/download", data={"token": ready})
    assert data.status_code == 200 and data.json()["membership"]["member"]["email"] == email
    assert data.json()["membership"]["waiting_for_you_to_confirm"] == []  # the download's own request is used up
    assert (await gateway.post("/me/confirm", data={"token": download})).status_code == 400  # used once

    erase = await gateway.post("/me/erase", data={"token": preferences, "confirm": "erase"})
    assert erase.status_code == 200 and "Check your email" in erase.text
    assert (await snapshot(membership_db, email))["member"]["status"] == "pending"
    confirm = link_token(await the_mail(mail, email, "Confirm: erase"), "/me/confirm")
    assert (await gateway.get("/me/confirm", params={"token": confirm})).status_code == 200
    assert (await snapshot(membership_db, email))["member"]["status"] == "pending"
    # A link for one member's request is not one for another's, and a preferences token is not a confirmation.
    assert (await gateway.post("/me/confirm", data={"token": preferences})).status_code == 400
    assert (await gateway.post("/me/confirm", data={"token": confirm})).status_code == 200
    assert await membership_db.fetchval("SELECT status FROM members WHERE id = $1", member_id) == "erased"
    assert await membership_db.fetchval("SELECT count(*) FROM member_requests WHERE member_id = $1", member_id) == 0


async def test_a_confirmation_of_a_download_lasts_half_an_hour(
    gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection
) -> None:
    email = await a_member(gateway, mail, membership_db, "stale")
    member_id = (await snapshot(membership_db, email))["member"]["id"]
    preferences = tokens.sign(launcher.secret_key(), tokens.PREFERENCES, {"m": member_id})
    await gateway.post("/me/data", data={"token": preferences})
    download = link_token(await the_mail(mail, email, "Confirm: download"), "/me/confirm")
    lifetime = await membership_db.fetchval(
        "SELECT expires_at - requested_at FROM member_requests WHERE member_id = $1 AND kind = 'download'", member_id
    )
    assert lifetime.total_seconds() == 30 * 60
    await membership_db.execute(
        "UPDATE member_requests SET expires_at = now() - interval '1 second' WHERE member_id = $1", member_id
    )
    stale = await gateway.post("/me/confirm", data={"token": download})
    assert stale.status_code == 400 and email not in stale.text
