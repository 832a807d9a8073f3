"""A person joins in a real browser (headless Chromium) and the welcome email arrives."""

from __future__ import annotations

import pytest

from deploy.local import launcher
from tests.support.browser import own_context
from tests.support.people import unique_email

pytestmark = pytest.mark.browser


async def test_person_joins_in_a_browser_and_gets_welcome_email(system, mail, browser):
    email = unique_email("browser")
    async with own_context(browser) as context:
        page = await context.new_page()
        await page.goto(f"{launcher.GATEWAY_URL}/join")
        await page.get_by_label("Your name").fill("Mary Seacole")
        await page.get_by_label("Email address").fill(email)
        await page.get_by_label("Postcode").fill("NG1 5FS")
        await page.get_by_label("I'll take action").check()
        await page.get_by_label("I agree that the network may email me", exact=False).check()
        await page.get_by_role("button", name="Join").click()
        await page.wait_for_url("**/join/thanks")
        assert await page.get_by_role("heading", name="Thank you for joining").is_visible()
    [welcome] = await mail.wait_for(email)
    assert "Dear Mary," in welcome["text"]


async def test_browser_shows_errors_next_to_fields_and_keeps_input(system, browser):
    async with own_context(browser) as context:
        page = await context.new_page()
        await page.goto(f"{launcher.GATEWAY_URL}/join")
        await page.get_by_label("Your name").fill("No Consent")
        await page.get_by_label("Email address").fill("not-an-email")
        await page.get_by_role("button", name="Join").click()
        summary = page.get_by_role("alert")
        assert "There is a problem" in await summary.inner_text()
        assert await page.get_by_label("Your name").input_value() == "No Consent"
        assert await page.get_by_label("Email address").get_attribute("aria-invalid") == "true"
