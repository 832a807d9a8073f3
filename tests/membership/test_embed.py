"""The join form embedded in another website: a plain cross-origin <form> that comes back to the site's own
thank-you page, and a JSON variant with CORS, both driven in headless Chromium from a page on another origin."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.membership.conftest import join_form, member_by_email, poll, unique_email
from tests.support.browser import own_context
from tests.support.inprocess import free_port

pytestmark = pytest.mark.browser


class StaticSite:
    """Another organisation's website: static pages served from a directory on a port of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def page(self, name: str, html: str) -> str:
        (self.root / name).write_text(html)
        return f"{self.origin}/{name}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticSite]:
    s = StaticSite(tmp_path_factory.mktemp("partner-site"))
    s.page("thanks.html", "<!doctype html><title>Thanks</title><h1>Thanks from our site</h1>")
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def allowed(site: StaticSite, db) -> AsyncIterator[str]:
    """The partner site on the allow-list of origins for the duration of a test."""
    await db.execute(
        "INSERT INTO allowed_origins (origin, note) VALUES ($1, 'test partner') ON CONFLICT DO NOTHING", site.origin
    )
    yield site.origin
    await db.execute("DELETE FROM allowed_origins WHERE origin = $1", site.origin)


def embedded_form(action: str, redirect: str) -> str:
    return f"""<!doctype html><html lang="en"><title>Partner campaign</title>
<h1>Join the network from our site</h1>
<form method="post" action="{action}">
  <label for="n">Your name</label><input id="n" name="name">
  <label for="e">Email address</label><input id="e" name="email" type="email">
  <label for="p">Postcode</label><input id="p" name="postcode">
  <input type="checkbox" id="c" name="email_consent" value="yes"><label for="c">You may email me</label>
  <input type="hidden" name="interests" value="racism-in-healthcare">
  <input type="hidden" name="source" value="partner-campaign-page">
  <input type="hidden" name="redirect" value="{redirect}">
  <button type="submit">Sign up</button>
</form></html>"""


async def test_plain_form_on_another_site_joins_and_returns_to_its_thank_you_page(
    site, allowed, membership_server, db, browser
):
    url = site.page("form.html", embedded_form(f"{membership_server.base_url}/join", f"{site.origin}/thanks.html"))
    email = unique_email("embedded")
    async with own_context(browser, java_script_enabled=False) as context:
        page = await context.new_page()
        await page.goto(url)
        await page.get_by_label("Your name").fill("Claudia Jones")
        await page.get_by_label("Email address").fill(email)
        await page.get_by_label("Postcode").fill("NG7 2RD")
        await page.get_by_label("You may email me").check()
        await page.get_by_role("button", name="Sign up").click()
        await page.wait_for_url(f"{site.origin}/thanks.html")
        assert await page.get_by_role("heading", name="Thanks from our site").is_visible()
    member = await member_by_email(db, email)
    assert member["name"] == "Claudia Jones" and member["interests"] == ["racism-in-healthcare"]
    assert member["source"] == "partner-campaign-page"
    consent = await db.fetchrow("SELECT source, site FROM consent_records WHERE member_id = $1", member["id"])
    assert consent["source"] == "partner-campaign-page" and consent["site"] == site.origin


async def test_embedded_form_with_a_mistake_is_corrected_on_our_page_then_returns_to_the_site(
    site, allowed, membership_server, db, browser
):
    url = site.page("form2.html", embedded_form(f"{membership_server.base_url}/join", f"{site.origin}/thanks.html"))
    email = unique_email("corrected")
    async with own_context(browser, java_script_enabled=False) as context:
        page = await context.new_page()
        await page.goto(url)
        await page.get_by_label("Your name").fill("Claudia Jones")
        await page.get_by_label("Email address").fill(email)
        await page.get_by_label("Postcode").fill("Nottingham")
        await page.get_by_label("You may email me").check()
        await page.get_by_role("button", name="Sign up").click()
        assert "There is a problem" in await page.get_by_role("alert").inner_text()
        assert await page.get_by_label("Email address").input_value() == email
        await page.get_by_label("Postcode").fill("NG7 2RD")
        await page.get_by_role("button", name="Join").click()
        await page.wait_for_url(f"{site.origin}/thanks.html")
    assert (await member_by_email(db, email))["interests"] == ["racism-in-healthcare"]


def json_page(endpoint: str, email: str) -> str:
    return f"""<!doctype html><html lang="en"><title>Script join</title><p id="result">waiting</p>
<script>
fetch("{endpoint}", {{method: "POST", headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{name: "Paul Stephenson", email: "{email}", postcode: "B1 1AA", email_consent: true,
                        subteams: ["outreach"], source: "script-widget"}})}})
  .then(r => r.json().then(b => document.getElementById("result").textContent = r.status + " " + JSON.stringify(b)))
  .catch(e => document.getElementById("result").textContent = "blocked " + e);
</script></html>"""


async def test_json_join_from_an_allowed_site_passes_cors_and_tells_where_the_person_is_placed(
    site, allowed, membership_server, db, browser
):
    email = unique_email("script")
    url = site.page("script.html", json_page(f"{membership_server.base_url}/join", email))
    async with own_context(browser) as context:
        page = await context.new_page()
        await page.goto(url)
        await page.wait_for_function("document.getElementById('result').textContent !== 'waiting'")
        result = await page.locator("#result").text_content()
    assert result.startswith("202 ") and "Birmingham Central" in result
    member = await member_by_email(db, email)
    assert member["source"] == "script-widget"
    assert await db.fetchval("SELECT site FROM consent_records WHERE member_id = $1", member["id"]) == site.origin


async def test_json_join_from_a_site_not_allowed_is_blocked_and_stores_nothing(site, membership_server, db, browser):
    email = unique_email("notallowed")
    url = site.page("rogue.html", json_page(f"{membership_server.base_url}/join", email))
    async with own_context(browser) as context:
        page = await context.new_page()
        await page.goto(url)
        await page.wait_for_function("document.getElementById('result').textContent !== 'waiting'")
        assert (await page.locator("#result").text_content()).startswith("blocked")
    await asyncio.sleep(0.5)
    assert await member_by_email(db, email) is None


async def test_redirect_to_a_site_not_allowed_is_refused_and_stores_nothing(client, db):
    email = unique_email("phish")
    response = await client.post("/join", data=join_form(email, redirect="https://evil.example/thanks"))
    assert response.status_code == 400 and "not one we work with" in response.text
    assert await member_by_email(db, email) is None


async def test_json_bad_input_is_a_422_with_reasons_and_stores_nothing(client, db):
    email = unique_email("jsonbad")
    outbox_before = await db.fetchval("SELECT count(*) FROM outbox")
    response = await client.post(
        "/join", json={"name": "x" * 200, "email": email, "postcode": "B1 1AA", "groups": ["atlantis"]}
    )
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"name", "email_consent", "groups"}
    assert await member_by_email(db, email) is None
    assert await db.fetchval("SELECT count(*) FROM outbox") == outbox_before
    assert (
        await client.post("/join", content=b"[1, 2", headers={"content-type": "application/json"})
    ).status_code == 400


async def test_json_join_answers_the_same_for_a_member_and_a_new_address(client, db):
    email = unique_email("jsonprobe")
    body = {"name": "Asquith Xavier", "email": email, "postcode": "DE1 1AA", "email_consent": True}
    first, second = [await client.post("/join", json=body) for _ in range(2)]
    assert first.status_code == second.status_code == 202 and first.json() == second.json()
    await poll(lambda: member_by_email(db, email))


async def test_network_organisers_choose_the_sites_that_may_embed_the_form(client, db):
    from services.membership import seeds
    from tests.membership.conftest import make_organiser

    _, network = await make_organiser(db)
    added = await client.post(
        "/admin/origins", headers=network, data={"origin": "https://Partner.example.org/join-us?x=1", "note": "MMS"}
    )
    assert added.status_code == 303
    assert await db.fetchval("SELECT note FROM allowed_origins WHERE origin = 'https://partner.example.org'") == "MMS"
    preflight = await client.options(
        "/join", headers={"Origin": "https://partner.example.org", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://partner.example.org"
    other = await client.options("/join", headers={"Origin": "https://other.example.org"})
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers

    bad = await client.post("/admin/origins", headers=network, data={"origin": "javascript:alert(1)"})
    assert bad.status_code == 422 and "like https://www.example.org" in bad.text
    _, regional = await make_organiser(db, "region", seeds.unit_id("region", "east-midlands"))
    refused = await client.post("/admin/origins", headers=regional, data={"remove": "https://partner.example.org"})
    assert refused.status_code == 404
    removed = await client.post("/admin/origins", headers=network, data={"remove": "https://partner.example.org"})
    assert removed.status_code == 303
    assert await db.fetchval("SELECT count(*) FROM allowed_origins WHERE origin = 'https://partner.example.org'") == 0
