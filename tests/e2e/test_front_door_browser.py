"""The network's front door in a real browser: the home page lists what the events and campaigns services announce,
the privacy notice is there, and an unknown address gets a page, not JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from deploy.local import launcher
from tests.campaigns.conftest import launch
from tests.events.conftest import schedule
from tests.support.browser import own_context
from tests.support.inprocess import poll
from tests.support.organisers import organiser_headers

pytestmark = pytest.mark.browser


def _soon() -> datetime:
    """A start sooner than other tests' meetings (the home page lists the next five): in 25 to 30 minutes."""
    at = datetime.now(UTC) + timedelta(minutes=25)
    return (at + timedelta(minutes=5 - at.minute % 5)).replace(second=0, microsecond=0)


def _clock(at: datetime) -> str:
    """How the page writes the time, in London: 6:30pm, 7am."""
    local = at.astimezone(ZoneInfo("Europe/London"))
    minutes = f":{local.minute:02d}" if local.minute else ""  # on the hour the page writes 7am, not 7:00am
    return f"{local.hour % 12 or 12}{minutes}{'am' if local.hour < 12 else 'pm'}"


async def _home_shows(gateway: httpx.AsyncClient, text: str, present: bool = True) -> bool:
    return (text in (await gateway.get("/")).text) == present


async def test_home_page_lists_a_scheduled_meeting_and_a_launched_campaign(gateway, browser):
    organiser = organiser_headers()
    starts = _soon()
    meeting = await schedule(
        gateway, organiser, kind="online", venue=None, online_url="https://meet.example.org/spring",
        starts_at=starts.isoformat(), ends_at=(starts + timedelta(hours=1)).isoformat(),
    )
    campaign = await launch(gateway, organiser)
    await poll(lambda: _home_shows(gateway, meeting["title"]), timeout=60)
    await poll(lambda: _home_shows(gateway, campaign["title"]), timeout=60)

    async with own_context(browser) as context:
        page = await context.new_page()
        await page.goto(f"{launcher.GATEWAY_URL}/")
        assert await page.get_by_role("heading", level=1).inner_text() == "Groundswell Network"
        assert await page.get_by_role("link", name="Join Groundswell Network").get_attribute("href") == "/join"
        link = page.get_by_role("link", name=meeting["title"])
        assert await link.get_attribute("href") == f"/events/{meeting['id']}"
        item = page.get_by_role("listitem").filter(has=link)
        assert "Online" in await item.inner_text()
        assert _clock(starts) in await item.inner_text()
        campaign_link = page.get_by_role("link", name=campaign["title"])
        assert await campaign_link.get_attribute("href") == f"/campaigns/{campaign['id']}"
        assert await page.get_by_role("link", name="sign in").get_attribute("href") == "/signin"
        await campaign_link.click()
        await page.wait_for_url(f"**/campaigns/{campaign['id']}")
        assert campaign["title"] in await page.get_by_role("heading", level=1).inner_text()


async def test_a_cancelled_meeting_and_a_closed_campaign_leave_the_home_page(gateway):
    organiser = organiser_headers()
    starts = _soon()
    meeting = await schedule(gateway, organiser, starts_at=starts.isoformat(),
                             ends_at=(starts + timedelta(hours=1)).isoformat())
    campaign = await launch(gateway, organiser)
    await poll(lambda: _home_shows(gateway, meeting["title"]), timeout=60)
    await poll(lambda: _home_shows(gateway, campaign["title"]), timeout=60)
    cancelled = await gateway.post(f"/meetings/{meeting['id']}/cancel", json={"reason": "Snow"}, headers=organiser)
    assert cancelled.status_code == 200, cancelled.text
    closed = await gateway.post(f"/campaigns/api/campaigns/{campaign['id']}/close", headers=organiser)
    assert closed.status_code == 200, closed.text
    await poll(lambda: _home_shows(gateway, meeting["title"], present=False), timeout=60)
    await poll(lambda: _home_shows(gateway, campaign["title"], present=False), timeout=60)


async def test_privacy_notice_is_a_page_with_what_we_collect_and_how_to_erase(system, browser):
    async with own_context(browser) as context:
        page = await context.new_page()
        await page.goto(f"{launcher.GATEWAY_URL}/join")
        await page.get_by_role("link", name="How we use your data").click()
        await page.wait_for_url("**/privacy")
        assert await page.get_by_role("heading", level=1).inner_text() == "How we use your data"
        assert "in force since" in await page.get_by_role("main").inner_text()
        await page.goto(f"{launcher.GATEWAY_URL}/privacy?version=1")  # the notice the installation started with
        for heading in ("What we collect", "Who sees it", "Getting or erasing your data", "Unsubscribing", "Contact"):
            assert await page.get_by_role("heading", name=heading).is_visible()


async def test_an_unknown_address_is_a_page_with_a_way_home_and_to_join(system, browser):
    async with own_context(browser) as context:
        page = await context.new_page()
        for path in ("/no-such-page", "/events/no-such-meeting/nothing"):
            response = await page.goto(f"{launcher.GATEWAY_URL}{path}")
            assert response is not None and response.status == 404
            assert "text/html" in response.headers["content-type"]
            assert await page.get_by_role("heading", name="Page not found").is_visible()
            assert await page.get_by_role("link", name="Go to the home page").get_attribute("href") == "/"
            assert await page.get_by_role("link", name="Join the network").get_attribute("href") == "/join"
