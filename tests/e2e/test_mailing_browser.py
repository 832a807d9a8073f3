"""A mailing in a real browser, on a phone (390x844) and a laptop (1280x800): an organiser of a region writes one,
sees who it will reach, saves it, previews it as a member, sends a test to their own address, and schedules it for
a time; the report says when it goes. No page is wider than the screen and axe-core finds nothing. (The organiser
signs in by their session cookie: the sign-in itself is the workspace browser test's.)"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest

from deploy.local import launcher
from services.notifications.mailings_web import NETWORK_TZ
from shared.auth import SESSION_COOKIE
from tests.e2e.test_organiser_workspace_browser import LAPTOP, PHONE
from tests.notifications.test_mailings import add_members, add_place, people, region_organiser  # noqa: F401
from tests.support.axe import axe_violations
from tests.support.browser import chromium

pytestmark = pytest.mark.browser


async def _fits(page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url} is {width}px wide"
    assert await axe_violations(page) == [], page.url


async def test_an_organiser_composes_previews_tests_and_schedules_a_mailing_on_a_phone_and_a_laptop(
    mail,
    notifications_db,
    people,  # noqa: F811
):
    db, tag = notifications_db, uuid.uuid4().hex[:6]
    region = await add_place(db, people, "region", f"Browser region {tag}")
    await add_members(db, people, 2, region=region, interests=[f"housing-{tag}"], tag="browser")
    headers, own_address = await region_organiser(db, people, region)
    token = headers["Authorization"].removeprefix("Bearer ")
    made: list[str] = []
    try:
        async with chromium() as browser:
            for size in (PHONE, LAPTOP):
                context = await browser.new_context(viewport=size, bypass_csp=True)  # only so axe can be injected
                host = urlsplit(launcher.GATEWAY_URL).hostname
                await context.add_cookies([{"name": SESSION_COOKIE, "value": token, "domain": host, "path": "/"}])
                page = await context.new_page()
                subject = f"Housing news {size['width']} {tag}"
                await page.goto(f"{launcher.GATEWAY_URL}/notifications/organise/mailings/new")
                await _fits(page)
                await page.get_by_label("Subject").fill(subject)
                await page.get_by_label("The email").fill(
                    "# Hello {first_name}\n\nRead [our plan](https://example.org/plan)."
                )
                await page.get_by_label("Interests").select_option(f"housing-{tag}")
                await page.wait_for_function("document.getElementById('audience-count').textContent === '2'")
                await page.get_by_role("button", name="Save draft").click()
                await page.wait_for_url("**/mailings/*?saved=draft")
                made.append(urlsplit(page.url).path.rsplit("/", 1)[1])
                assert "Saved as a draft" in await page.get_by_role("status").first.inner_text()
                await _fits(page)

                await page.get_by_role("link", name="Preview it as a member").click()
                await page.wait_for_load_state()
                shown = await page.locator("main").inner_text()
                assert f"Subject: {subject}" in shown and "Browser 0" in shown  # as one of the audience gets it
                assert "Hello Browser" in await page.frame_locator("iframe").locator("body").inner_text()
                await _fits(page)
                await page.get_by_role("link", name="Back to the mailing").click()

                await page.get_by_role("button", name="Send a test to myself").click()
                await page.wait_for_url("**?saved=test")
                assert "A test is on its way" in await page.locator("main").inner_text()
                tests = await mail.wait_for(own_address, count=len(made))
                assert f"[Test] {subject}" in [m["subject"] for m in tests]

                await page.get_by_role("link", name="Send or schedule…").click()
                await _fits(page)
                at = (datetime.now(NETWORK_TZ) + timedelta(days=30)).replace(second=0, microsecond=0)
                await page.get_by_label("At a time (UK time)").check()
                await page.get_by_label("Date and time").fill(at.strftime("%Y-%m-%dT%H:%M"))
                await page.get_by_role("button", name="Yes, send it").click()
                await page.wait_for_url("**/report")
                await _fits(page)
                status = await db.fetchval("SELECT status FROM mailings WHERE id = $1", made[-1])
                assert status == "scheduled"
                await context.close()
    finally:
        await db.execute("DELETE FROM mailings WHERE id = ANY($1::text[])", made)
