"""The member journey of issue #15 in a real browser, on a phone (390x844): a person joins through the public join
form, then signs a petition, makes a pledge, writes to their MP (confirming the letter from the emailed link) and
RSVPs to a meeting, each time typing their address differently (case, spaces), all through the public pages. On the
organiser pages they are then one person: found by name among the members, on the ladder with those actions and
each of them on their timeline, not among those who have not taken part, and found by name at the check-in desk.
Their data download holds every service's part."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, ViewportSize

from deploy.local import launcher
from shared import auth, tokens
from tests.membership.conftest import make_organiser
from tests.support.browser import chromium
from tests.support.everything import ask_path, campaign, meeting
from tests.support.inprocess import poll
from tests.support.mail import MailCatcher
from tests.support.people import unique_email

pytestmark = pytest.mark.browser

PHONE: ViewportSize = {"width": 390, "height": 844}
GATEWAY = launcher.GATEWAY_URL


async def _submit(page: Page, button: str) -> None:
    await page.get_by_role("button", name=button).click()
    await page.wait_for_load_state()


async def _join(page: Page, name: str, email: str) -> None:
    """The join form's short part only (name, email, postcode, consent), by its labels."""
    await page.goto(f"{GATEWAY}/join")
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Postcode").fill("NG7 2RD")
    await page.locator("#email_consent").check()
    await _submit(page, "Join")


async def _act(page: Page, path: str, name: str, email: str, button: str, fields: dict[str, str]) -> None:
    await page.goto(f"{GATEWAY}{path}")
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Email address").fill(email)
    for label, value in fields.items():
        await page.get_by_label(label, exact=True).fill(value)
    await _submit(page, button)


async def _letter_link(mail: MailCatcher, email: str) -> str | None:
    for message in await mail.messages(email):
        found = re.search(r"https?://\S+?(/campaigns/letters/\S+)", message["text"])
        if message["subject"].startswith("Confirm your letter") and found:
            return found.group(1)
    return None


async def _as_organiser(context: BrowserContext, token: str) -> Page:
    """A signed-in organiser's phone: the session cookie sign-in sets."""
    await context.add_cookies([{"name": auth.SESSION_COOKIE, "value": token, "url": GATEWAY}])
    return await context.new_page()


async def _level_shown(page: Page, level: str) -> bool:
    await page.reload()
    return level in await page.locator("main").inner_text()


async def _download(gateway: httpx.AsyncClient, mail: MailCatcher, member_id: str, email: str) -> dict[str, Any]:
    """The member's data download, asked for from their preferences link and fetched from the link emailed."""
    preferences = tokens.sign(launcher.secret_key(), tokens.PREFERENCES, {"m": member_id})
    assert (await gateway.post("/me/data", data={"token": preferences})).status_code == 200

    async def link(subject: str, path: str) -> str | None:
        for message in await mail.messages(email):
            found = re.search(re.escape(path) + r"\?token=([\w.\-]+)", message["text"])
            if message["subject"].startswith(subject) and found:
                return found.group(1)
        return None

    confirm = await poll(lambda: link("Confirm: download", "/me/confirm"), 90, 0.5)
    assert (await gateway.post("/me/confirm", data={"token": confirm})).status_code == 200
    token = await poll(lambda: link("Your data from", "/me/download"), 90, 0.5)
    return dict(json.loads((await gateway.post("/me/download", data={"token": token})).text))


async def test_a_member_who_joins_and_acts_with_their_address_typed_differently_is_one_person_to_organisers(
        gateway: httpx.AsyncClient, mail: MailCatcher, membership_db) -> None:
    _, organiser = await make_organiser(membership_db)
    asks, rally = await campaign(gateway, organiser), await meeting(gateway, organiser)
    email, name = unique_email("journey"), f"Asquith Xavier {uuid.uuid4().hex[:6]}"
    local, domain = email.split("@")

    async with chromium() as browser:
        person = await browser.new_page(viewport=PHONE)
        await _join(person, name, email)
        member_id = await poll(lambda: membership_db.fetchval(
            "SELECT id FROM members WHERE email_normalised = $1", email))
        await _act(person, ask_path(asks, "petition"), name, f"  {email.upper()} ", "Sign the petition", {})
        await _act(person, ask_path(asks, "pledge"), name, f"{local.capitalize()}@{domain.upper()}", "Make my pledge",
                   {"Your pledge, in your own words": "I will stand with my neighbours."})
        await _act(person, ask_path(asks, "write_to_mp"), name, f"{email.title()} ", "Find my MP",
                   {"Your home postcode": "NG7 2RD"})
        await person.get_by_role("textbox", name="Your letter").fill(f"Dear Chris Holloway,\n\nPlease act.\n\n{name}")
        await _submit(person, "Send my letter")
        await person.goto(GATEWAY + await poll(lambda: _letter_link(mail, email), 90, 0.5))
        await _submit(person, "Send my letter")
        assert "Your letter is on its way" in await person.locator("main").inner_text()
        await person.goto(f"{GATEWAY}/events/{rally['id']}")
        await person.get_by_label("Your name").fill(name)
        await person.get_by_label("Email address").fill(f"{local.upper()}@{domain}")
        await _submit(person, "RSVP")

        token = organiser["Authorization"].removeprefix("Bearer ")
        desk = await _as_organiser(await browser.new_context(viewport=PHONE), token)
        # Found by name among the members; on the ladder with three actions, each on their timeline.
        await desk.goto(f"{GATEWAY}/members")
        await desk.get_by_label("Search by name or email").fill(name)
        await _submit(desk, "Show members")
        await desk.get_by_role("link", name=name).click()
        assert await poll(lambda: _level_shown(desk, "participant"), 90, 1.0)
        timeline = await desk.locator("ol.timeline").inner_text()
        for done in ("Signed the petition", "Made a pledge", "Wrote to their MP",
                     f"Said they are going to {rally['title']}"):
            assert done in timeline, timeline
        # Not among those who have not taken part.
        await desk.goto(f"{GATEWAY}/campaigns/organise/long-tail")
        assert name not in await desk.locator("main").inner_text()
        # Found by name at the meeting's check-in desk.
        await desk.goto(f"{GATEWAY}/events/organise/{rally['id']}/check-in")
        await desk.get_by_label("Search by name or email").fill(name)
        await _submit(desk, "Search")
        assert await desk.get_by_role("row").filter(has_text=name).count() == 1

    # Their data download holds every service's part of what they did.
    data = await _download(gateway, mail, member_id, email)
    assert data["complete"] is True and data["membership"]["member"]["email"] == email
    assert [r["meeting"] for r in data["events"]["rsvps"]] == [rally["title"]]
    assert {a["kind"] for a in data["campaigns"]["actions"]} == {"petition", "pledge", "write_to_mp"}
    assert {"mp_letter_copy", "confirm_download"} <= {e["kind"] for e in data["notifications"]["emails"]}
