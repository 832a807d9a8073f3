"""The RSVP form in a real browser (headless Chromium, JavaScript off): labels, error summary, then success."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import async_playwright

from tests.events.conftest import of_meeting, schedule

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


async def test_someone_rsvps_in_a_browser_after_fixing_an_error(events_server, client, organiser, db, kafka):
    meeting = await schedule(client, organiser, title="Browser RSVP meeting", capacity=10)
    email = f"browser-{uuid.uuid4().hex[:8]}@example.org"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context(java_script_enabled=False)
        page = await context.new_page()
        await page.goto(f"{events_server.base_url}/events/{meeting['id']}")
        assert await page.get_by_role("heading", name="Browser RSVP meeting").is_visible()
        await page.get_by_label("Your name").fill("Grace Lee")
        await page.get_by_label("Email address").fill("grace-at-example")
        await page.get_by_role("button", name="RSVP").click()
        summary = page.get_by_role("alert")
        assert "There is a problem" in await summary.inner_text()
        assert await page.get_by_label("Email address").get_attribute("aria-invalid") == "true"
        assert await page.get_by_label("Your name").input_value() == "Grace Lee"
        await summary.get_by_role("link").first.click()  # the summary links to the field
        await page.get_by_label("Email address").fill(email)
        await page.get_by_label("Guests you are bringing").fill("1")
        await page.get_by_role("button", name="RSVP").click()
        await page.wait_for_url("**/rsvp/sent")
        assert await page.get_by_role("heading", name="Check your email").is_visible()
        await context.close()
        await browser.close()
    row = await db.fetchrow("SELECT status, guests FROM rsvps WHERE meeting_id = $1", meeting["id"])
    assert row["status"] == "going" and row["guests"] == 1
    await kafka.wait_for(of_meeting(meeting["id"], "RsvpReceived"))
