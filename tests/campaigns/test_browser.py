"""In headless Chromium: the dashboard's charts are drawn with nothing fetched from elsewhere (it works offline),
and the petition form works without JavaScript, with its labels and error summary."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import pytest
from playwright.async_api import async_playwright

from tests.campaigns.conftest import ask_path, launch, organiser_token, poll, quiet

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


async def test_the_dashboard_draws_its_charts_offline_for_a_region_organiser(campaigns_server, network):
    await quiet(campaigns_server)
    region = network["region_a"].unit_id
    token = organiser_token("region", region)
    host = urlparse(campaigns_server.base_url).netloc
    elsewhere: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context()

        async def only_this_server(route) -> None:
            if urlparse(route.request.url).netloc != host:
                elsewhere.append(route.request.url)
                await route.abort()
            else:
                await route.continue_()

        await context.route("**/*", only_this_server)
        # the session cookie membership's /signin sets on the gateway's origin
        await context.add_cookies([{"name": "gs_organiser", "value": token, "url": campaigns_server.base_url}])
        page = await context.new_page()
        await page.goto(f"{campaigns_server.base_url}/dashboard")
        assert page.url.endswith("/dashboard")
        assert await page.get_by_role("heading", level=1).inner_text() == \
            f"Dashboard: {network['region_a'].name} (region)"
        charts = page.locator("svg.chart[role=img]")
        assert await charts.count() >= 6
        kinds = {await charts.nth(i).get_attribute("data-chart") for i in range(await charts.count())}
        assert {"line", "bar", "funnel", "hbar"} <= kinds
        for i in range(await charts.count()):
            chart = charts.nth(i)
            assert await chart.is_visible()
            box = await chart.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 40
            assert (await chart.locator("title").first.text_content() or "").strip()
        assert await page.locator("svg.chart--line polyline.series").count() >= 2  # all, and the region's group
        assert await page.locator("svg.chart--funnel rect.bar").count() == 4
        growth = page.get_by_role("img", name="Members per group, week by week")
        assert await growth.count() == 1
        table = await page.locator("section[aria-labelledby=growth-h] table").inner_text()
        assert network["group_a"].name in table and network["group_b"].name not in await page.content()
        async with page.expect_download() as download:
            await page.get_by_role("link", name="Download actions as CSV").click()
        assert (await download.value).suggested_filename == f"actions-region-{region}.csv"
        await context.close()
        await browser.close()
    assert elsewhere == []


async def test_someone_signs_a_petition_in_a_browser_without_javascript(campaigns_server, client, organiser, db):
    campaign = await launch(client, organiser)
    email = f"browser-{uuid.uuid4().hex[:8]}@example.org"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = await browser.new_context(java_script_enabled=False)
        page = await context.new_page()
        await page.goto(campaigns_server.base_url + ask_path(campaign, "petition"))
        await page.get_by_label("Your name").fill("Grace Lee")
        await page.get_by_label("Email address").fill("grace-at-example")
        await page.get_by_role("button", name="Sign the petition").click()
        summary = page.get_by_role("alert")
        assert "There is a problem" in await summary.inner_text()
        assert await page.get_by_label("Email address").get_attribute("aria-invalid") == "true"
        await summary.get_by_role("link").first.click()
        await page.get_by_label("Email address").fill(email)
        await page.get_by_label("Why are you signing? (optional)").fill("For my family.")
        await page.get_by_role("button", name="Sign the petition").click()
        await page.wait_for_url("**/thanks")
        assert await page.get_by_text("You have signed the petition.").is_visible()
        await context.close()
        await browser.close()
    await poll(lambda: db.fetchval("SELECT comment = 'For my family.' FROM actions WHERE campaign_id = $1",
                                   campaign["id"]))
