"""The organiser workspace in a real browser, on a phone (390x844) and a laptop (1280x800): a new organiser sets a
password with the TOTP secret `make organiser` printed, signs in, lands on the home, opens every area of the four
services through the one shared menu, schedules a meeting for a region chosen by name, which only that region's
members are told about, and opens its check-in desk; drafts a campaign with a petition and a pledge, previews it and
publishes it; approves a pledge someone made on its public page; edits a rule of the engagement ladder (and puts it
back); and revokes another organiser's role. No page is wider than the screen, no field asks for an id, and axe-core
finds nothing."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from playwright.async_api import Page

from deploy.local import launcher
from tests.support.axe import axe_violations
from tests.support.browser import chromium
from tests.support.inprocess import poll

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}
PASSWORD = "correct horse battery staple"
BIRMINGHAM_REGION = "Birmingham and the Black Country (the whole region)"
# The areas of the shared menu and a heading each one's page shows.
AREAS = {
    "Members": "Members",
    "Regions and groups": "Regions",
    "Organisers and roles": "Organisers",
    "Meetings": "Your meetings",
    "Check-in": "Your meetings",
    "Campaigns": "Your campaigns",
    "Pledges": "Pledges to moderate",
    "Engagement ladder": "Engagement ladder",
    "Dashboard": "Dashboard",
    "Mailings": "Mailings",
    "Emails and digests": "Notifications",
    "Dead letters": "Dead letters",
    "Home": "Hello,",
}


def _new_organiser(name: str) -> tuple[str, str, str]:
    """`make organiser` against the running stack: the email, the TOTP secret and the set-password link it prints."""
    email = f"organiser-{uuid.uuid4().hex[:8]}@example.org"
    done = subprocess.run(
        [sys.executable, "-m", "deploy.local.launcher", "organiser", f"--email={email}", "--scope=network",
         f"--name={name}"], capture_output=True, text=True, timeout=120, check=True)

    def printed(label: str) -> str:
        match = re.search(rf"^{re.escape(label)}:\s+(\S+)$", done.stdout, re.M)
        assert match, done.stdout + done.stderr
        return match.group(1)

    return email, printed("TOTP secret"), printed("set password link")


def _code(secret: str, ahead_s: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=ahead_s))


async def _fits_and_asks_no_id(page: Page) -> None:
    """The page is no wider than the screen, no visible label asks for an id, and axe-core finds no violation."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url} is {width}px wide"
    labels = await page.locator("label:visible").all_inner_texts()
    assert not [t for t in labels if re.search(r"\bids?\b", t, re.I)], (page.url, labels)
    assert await axe_violations(page) == [], page.url


async def _open_area(page: Page, label: str, phone: bool) -> None:
    menu = page.locator("details.org-menu")
    if phone and not await menu.evaluate("menu => menu.open"):  # the menu folds behind "Menu" on a phone
        await page.get_by_text("Menu", exact=True).click()
    await page.get_by_role("navigation", name="Organisers").get_by_role("link", name=label, exact=True).click()
    await page.wait_for_load_state()


async def _sign_in(page: Page, email: str, secret: str, link: str) -> None:
    await page.goto(link)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#confirm").fill(PASSWORD)
    await page.locator("#code").fill(_code(secret))
    await page.get_by_role("button", name="Set password").click()
    await page.wait_for_load_state()
    await page.goto(f"{launcher.GATEWAY_URL}/signin")
    await page.locator("#email").fill(email)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#code").fill(_code(secret, 30))  # the next step's code: the one just used is spent
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/admin")


async def _confirmed_member(gateway: httpx.AsyncClient, mail: Any, postcode: str) -> str:
    """Someone joins at `postcode` and confirms from their welcome email, as a person would."""
    email = f"member-{uuid.uuid4().hex[:8]}@example.org"
    joined = await gateway.post("/join", data={"name": "Test Member", "email": email, "postcode": postcode,
                                               "email_consent": "yes"})
    assert joined.status_code in (200, 303), joined.text
    [welcome] = await mail.wait_for(email, timeout=120)
    confirm = re.search(r"https?://\S+/join/confirm\?token=[\w.\-]+", welcome["text"])
    assert confirm, welcome["text"]
    address = urlsplit(confirm.group(0))
    page = await gateway.get(f"{address.path}?{address.query}")  # a page with a button: opening it confirms nothing
    assert page.status_code == 200, page.text
    confirmed = await gateway.post("/join/confirm", data={"token": parse_qs(address.query)["token"][0]})
    assert confirmed.status_code in (200, 303), confirmed.text
    return email


async def _told_about(mail: Any, email: str, title: str) -> bool:
    return any(title in (m.get("subject", "") + m.get("text", "")) for m in await mail.messages(email))


async def _add_ask(page: Page, kind: str, fields: dict[str, str]) -> None:
    """The ask form's two steps: the kind first (a GET, without JavaScript), then only that kind's fields."""
    await page.get_by_label(kind, exact=True).check()
    await page.get_by_role("button", name="Next").click()
    await page.wait_for_load_state()
    await _fits_and_asks_no_id(page)
    for label, value in fields.items():
        await page.get_by_label(label, exact=True).fill(value)
    await page.get_by_role("button", name="Add the ask").click()
    await page.wait_for_load_state()


async def _draft_preview_and_publish(page: Page, phone: bool, title: str, pledge_words: str) -> str:
    """A new campaign is a draft with a petition and a pledge, previewed, then published; its public address."""
    await _open_area(page, "Campaigns", phone)
    await page.get_by_role("link", name="New campaign").first.click()
    await _fits_and_asks_no_id(page)
    await page.get_by_label("Title").fill(title)
    await page.get_by_label("Goal").fill("An end to racist stop and search in our city")
    await page.get_by_role("button", name="Save the draft").click()
    await page.wait_for_url("**/campaigns/organise/campaigns/*")
    assert "A draft" in await page.locator("main").inner_text()
    await _fits_and_asks_no_id(page)
    admin = page.url
    campaign_id = admin.rsplit("/", 1)[1]
    async with httpx.AsyncClient(base_url=launcher.GATEWAY_URL) as anyone:
        assert (await anyone.get(f"/campaigns/{campaign_id}")).status_code == 404  # nobody sees a draft

    # Without choosing a kind the form asks for one; a petition missing its addressee is refused, text kept.
    await page.get_by_label("Sign the petition", exact=True).check()
    await page.get_by_role("button", name="Next").click()
    await page.get_by_label("Text of the petition").fill("We ask the Chief Constable to end racist stop and search.")
    await page.get_by_role("button", name="Add the ask").click()
    assert "Say who the petition is addressed to" in await page.locator(".error-summary").inner_text()
    assert "Chief Constable to end" in await page.get_by_label("Text of the petition").input_value()
    await _fits_and_asks_no_id(page)
    await page.get_by_label("Who the petition is addressed to").fill("The Chief Constable")
    await page.get_by_role("button", name="Add the ask").click()
    await page.wait_for_url(admin)
    await _add_ask(page, "Make a pledge", {"What people pledge": "I pledge to record and report what I see."})

    await page.get_by_role("link", name="Preview").click()
    assert "Preview" in await page.get_by_role("status").inner_text()
    assert "Make a pledge" in await page.locator("main").inner_text()
    await _fits_and_asks_no_id(page)
    await page.get_by_role("link", name="Back to the campaign").click()
    await page.get_by_role("link", name="Publish…").click()
    await _fits_and_asks_no_id(page)
    await page.get_by_role("button", name="Yes, publish the campaign").click()
    await page.wait_for_url(admin)
    assert "Status: live" in await page.locator("main").inner_text()
    return f"{launcher.GATEWAY_URL}/campaigns/{campaign_id}"


async def _pledge_and_approve(page: Page, phone: bool, public: str, words: str) -> None:
    """Someone pledges on the public page (in a browser of their own); the organiser shows it publicly from the
    pledges page."""
    assert page.context.browser is not None
    someone = await page.context.browser.new_page(viewport=page.viewport_size, bypass_csp=True)
    await someone.goto(public)
    await _fits_and_asks_no_id(someone)
    await someone.get_by_role("link", name="Make a pledge").click()
    await someone.get_by_label("Your name").fill("Sam Okoro")
    await someone.get_by_label("Email address").fill(f"pledger-{uuid.uuid4().hex[:8]}@example.org")
    await someone.get_by_label("Your pledge, in your own words").fill(words)
    await someone.get_by_role("button", name="Make my pledge").click()
    await someone.wait_for_load_state()
    ask_page = someone.url.split("?", 1)[0].removesuffix("/thanks")
    assert words not in await someone.locator("main").inner_text()  # not shown before a moderator has read it
    await _open_area(page, "Pledges", phone)
    card = page.locator(".card").filter(has_text=words)
    await _fits_and_asks_no_id(page)
    await card.get_by_role("button", name="Show it publicly").click()
    await page.wait_for_load_state()
    assert words not in await page.locator("main").inner_text()
    await someone.goto(ask_page)
    assert words in await someone.locator("main").inner_text()
    await someone.close()


async def _set_ladder_threshold(page: Page, phone: bool, field: str, value: str) -> None:
    await _open_area(page, "Engagement ladder", phone)
    await page.locator(f"#{field}").fill(value)
    await page.get_by_role("button", name="Save the ladder").click()
    await page.wait_for_load_state()
    if await page.get_by_role("button", name="Yes, change the ladder").count():  # members would change level
        await _fits_and_asks_no_id(page)
        await page.get_by_role("button", name="Yes, change the ladder").click()
    assert "The ladder is saved" in await page.get_by_role("status").inner_text()
    await _fits_and_asks_no_id(page)


async def _edit_a_ladder_rule(page: Page, phone: bool) -> None:
    """The top level needs one more action; the page shows the new rule; then it is put back as it was."""
    await _open_area(page, "Engagement ladder", phone)
    top = (await page.locator("input[id^=min_actions-]").count()) - 2  # the last row adds a level
    field = f"min_actions-{top}"
    was = await page.locator(f"#{field}").input_value()
    await _fits_and_asks_no_id(page)
    await _set_ladder_threshold(page, phone, field, str(int(was) + 1))
    await _open_area(page, "Engagement ladder", phone)
    assert await page.locator(f"#{field}").input_value() == str(int(was) + 1)
    await _set_ladder_threshold(page, phone, field, was)


async def _revoke_role(page: Page, phone: bool, holder: str) -> None:
    await _open_area(page, "Organisers and roles", phone)
    await page.get_by_role("link", name="Roles", exact=True).click()
    await _fits_and_asks_no_id(page)
    await page.get_by_role("link", name=f"Revoke {holder}'s role").click()
    assert f"Revoke {holder}'s role?" in await page.get_by_role("heading", level=1).inner_text()
    await _fits_and_asks_no_id(page)
    await page.get_by_role("button", name="Revoke the role").click()
    await page.wait_for_load_state()
    assert "The role is revoked" in await page.get_by_role("status").inner_text()
    assert not await page.get_by_role("link", name=f"Revoke {holder}'s role").count()


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["phone", "laptop"])
async def test_an_organiser_walks_the_whole_journey_from_sign_in_to_revoking_a_role(gateway, mail, size):
    phone = size is PHONE
    name = f"Jayaben {uuid.uuid4().hex[:4]}"
    email, secret, link = await asyncio.to_thread(_new_organiser, name)
    colleague = f"Claudia {uuid.uuid4().hex[:4]}"
    await asyncio.to_thread(_new_organiser, colleague)
    in_region, elsewhere = await asyncio.gather(_confirmed_member(gateway, mail, "B1 1AA"),
                                                _confirmed_member(gateway, mail, "NG1 1AA"))
    async with chromium() as browser:
        page = await browser.new_page(viewport=size, bypass_csp=True)  # only so axe-core can be injected
        await _sign_in(page, email, secret, link)
        assert f"Hello, {name}" in await page.get_by_role("heading", level=1).inner_text()
        header = await page.locator("header").inner_text() if not phone else ""
        assert phone or f"{name}, organiser for the whole network" in header
        await _fits_and_asks_no_id(page)

        for label, heading in AREAS.items():
            await _open_area(page, label, phone)
            assert heading in await page.get_by_role("heading", level=1).inner_text(), (label, page.url)
            await _fits_and_asks_no_id(page)

        await _open_area(page, "Meetings", phone)
        await page.get_by_role("link", name="Schedule a meeting").click()
        await _fits_and_asks_no_id(page)
        title = f"Organising night {uuid.uuid4().hex[:6]}"
        starts = datetime.now(UTC) + timedelta(days=3)
        await page.get_by_label("Title").fill(title)
        await page.get_by_label("Who is it for").select_option(label=BIRMINGHAM_REGION)
        await page.get_by_label("Starts").fill(starts.strftime("%Y-%m-%dT19:00"))
        await page.get_by_label("Ends").fill(starts.strftime("%Y-%m-%dT21:00"))
        await page.get_by_label("Venue").fill("Friends Meeting House")
        await page.get_by_role("button", name="Schedule").click()
        await page.wait_for_url("**/check-in")
        await _fits_and_asks_no_id(page)

        await _open_area(page, "Meetings", phone)
        card = page.get_by_role("listitem").filter(has_text=title)
        assert "For the region Birmingham and the Black Country" in await card.inner_text()
        assert "0 going" in await card.inner_text()
        await card.get_by_role("link", name=re.compile("^Cancel")).click()
        assert "Yes, cancel the meeting" in await page.content()  # asks first; nothing cancelled yet
        await _fits_and_asks_no_id(page)
        await page.get_by_role("link", name="No, keep it").click()
        assert "Cancelled" not in await page.get_by_role("listitem").filter(has_text=title).inner_text()
        await page.get_by_role("link", name=f"Check-in desk for {title}").click()
        assert f"Check-in: {title}" in await page.get_by_role("heading", level=1).inner_text()
        await _fits_and_asks_no_id(page)

        words = f"I pledge to come to every court hearing {uuid.uuid4().hex[:6]}"
        public = await _draft_preview_and_publish(page, phone, f"Stop and search {uuid.uuid4().hex[:6]}", words)
        await _pledge_and_approve(page, phone, public, words)
        await _edit_a_ladder_rule(page, phone)
        await _revoke_role(page, phone, colleague)

    await poll(lambda: _told_about(mail, in_region, title), timeout=120)
    await mail.settle(elsewhere, seconds=5)
    assert not await _told_about(mail, elsewhere, title)
