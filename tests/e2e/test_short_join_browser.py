"""The short join's thank-you page in Chromium at a phone's and a laptop's size (issue #16): "tell us more" is filled
in by its labels and saved without the address; the join form fits well within one laptop screen; neither page is
wider than the screen nor has an axe-core violation."""

from __future__ import annotations

import asyncpg
import pytest
from playwright.async_api import Page

from deploy.local import launcher
from tests.support.axe import axe_violations
from tests.support.browser import chromium
from tests.support.people import unique_email

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}


async def _fits(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url} is {width}px wide"
    assert await axe_violations(page) == [], page.url


async def _at_both_sizes(page: Page) -> None:
    for size in (PHONE, LAPTOP):
        await page.set_viewport_size(size)
        await _fits(page)


async def test_a_person_joins_in_five_answers_then_tells_us_more_on_the_thank_you_page(
    membership_db: asyncpg.Connection
) -> None:
    email = unique_email("short-browser")
    async with chromium() as browser:
        page = await browser.new_page(viewport=LAPTOP, bypass_csp=True)  # only so axe-core can be injected
        await page.goto(f"{launcher.GATEWAY_URL}/join")
        button = await page.get_by_role("button", name="Join").bounding_box()
        assert button is not None and button["y"] + button["height"] <= LAPTOP["height"]  # no scrolling to join
        await _at_both_sizes(page)
        await page.get_by_label("Your name").fill("Olive Morris")
        await page.get_by_label("Email address").fill(email)
        await page.get_by_label("Postcode").fill("B15 2TT")
        await page.get_by_label("I'll help organise").check()
        await page.get_by_label("I agree that the network may email me", exact=False).check()
        await page.get_by_role("button", name="Join").click()
        await page.wait_for_url("**/join/thanks")
        assert await page.get_by_role("heading", name="Your local group: Birmingham Central").is_visible()
        await _at_both_sizes(page)

        await page.get_by_label("Racism in policing").check()
        await page.get_by_label("Legal observers").check()
        await page.get_by_label("Skills you could offer (optional)").fill("First aid")
        await page.get_by_role("button", name="Save").click()
        await page.wait_for_url("**/join/thanks")
        assert "we have kept what you told us" in await page.get_by_role("status").inner_text()
    member = await membership_db.fetchrow(
        "SELECT id, engagement_level, interests, skills FROM members WHERE email_normalised = $1", email)
    assert member["engagement_level"] == "organise" and member["interests"] == ["racism-in-policing"]
    assert member["skills"] == "First aid"
    subteams = await membership_db.fetchval("SELECT count(*) FROM member_subteams WHERE member_id = $1", member["id"])
    assert subteams == 1
