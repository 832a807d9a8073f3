"""The first path: a person joins through the gateway and finds a personal welcome email."""

from __future__ import annotations

import re

from tests.support.people import unique_email


async def test_join_through_gateway_sends_personal_welcome_email(gateway, mail, membership_db):
    email = unique_email("ada")
    form = await gateway.get("/join")
    assert form.status_code == 200 and 'name="email"' in form.text

    response = await gateway.post(
        "/join",
        data={"name": "Ada Lovelace", "email": email, "postcode": "B1 1AA", "email_consent": "yes"},
    )
    assert response.status_code == 303 and response.headers["location"] == "/join/thanks"

    [welcome] = await mail.wait_for(email, timeout=30)
    assert welcome["to"] == [email] or email in welcome["to"]
    assert welcome["subject"].startswith("Welcome to") and "Ada" in welcome["subject"]
    assert "Dear Ada," in welcome["text"]
    assert re.search(r"/join/confirm\?token=\S+", welcome["text"]), "double opt-in link missing"

    row = await membership_db.fetchrow("SELECT name, postcode, status FROM members WHERE email_normalised = $1", email)
    assert row["name"] == "Ada Lovelace" and row["postcode"] == "B1 1AA" and row["status"] == "pending"


async def test_joining_again_with_same_email_asks_to_confirm_the_changes_without_second_welcome(
    gateway, mail, membership_db
):
    email = unique_email("grace")
    first = {"name": "Grace Hopper", "email": email, "postcode": "CV1 2AB", "email_consent": "yes"}
    assert (await gateway.post("/join", data=first)).status_code == 303
    await mail.wait_for(email)

    again = {**first, "email": f"  {email.upper()} ", "postcode": "CV1 5FB"}
    assert (await gateway.post("/join", data=again)).status_code == 303

    emails = await mail.wait_for(email, count=2)  # in either order: the senders' connections send side by side
    [welcome] = [e for e in emails if e["subject"].startswith("Welcome")]
    [confirm] = [e for e in emails if e["subject"].startswith("Confirm the changes")]
    assert "Dear Grace," in confirm["text"]
    assert len(await mail.settle(email, seconds=3)) == 2
    postcode = "SELECT postcode FROM members WHERE email_normalised = $1"
    assert [r["postcode"] for r in await membership_db.fetch(postcode, email)] == ["CV1 2AB"]

    link = re.search(r"/join/changes\?token=(\S+)", confirm["text"])
    assert link, "no link to confirm the changes"
    page = await gateway.get("/join/changes", params={"token": link.group(1)})
    assert page.status_code == 200 and "CV1 5FB" in page.text
    assert (await gateway.post("/join/changes", data={"token": link.group(1)})).status_code == 200
    assert [r["postcode"] for r in await membership_db.fetch(postcode, email)] == ["CV1 5FB"]


async def test_invalid_join_rerenders_with_errors_and_input_kept_and_stores_nothing(gateway, mail, membership_db):
    email = unique_email("invalid")
    response = await gateway.post(
        "/join", data={"name": "Bad Postcode", "email": email, "postcode": "NOT A CODE", "email_consent": ""}
    )
    assert response.status_code == 422
    page = response.text
    assert "There is a problem" in page
    assert "Enter a real UK postcode" in page and "Tick the box" in page
    assert f'value="{email}"' in page and 'value="Bad Postcode"' in page
    assert 'aria-invalid="true"' in page

    assert await membership_db.fetchval("SELECT count(*) FROM members WHERE email_normalised = $1", email) == 0
    assert await mail.settle(email, seconds=2) == []
