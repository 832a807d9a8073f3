"""Cross-site requests cannot act for an organiser (issue #14, point 6).

Another site's page can make an organiser's browser post a form to us, cookie and all; every service refuses such
a post (403) and nothing changes, while the same form from our own pages works. Session tokens never travel in
addresses (the old `sign-in?token=` routes are gone), and the session cookie is `Secure` over https.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from deploy.local import launcher
from shared import auth
from tests.conftest import asyncpg_dsn
from tests.membership.conftest import make_organiser
from tests.support.accounts import active_account

EVIL = "https://evil.example"


@pytest.fixture
async def organiser_cookie(membership_db: asyncpg.Connection) -> dict[str, str]:
    """A network organiser's session, as their browser holds it: the cookie, not a header."""
    _, headers = await make_organiser(membership_db, "network")
    return {auth.SESSION_COOKIE: headers["Authorization"][7:]}


def _meeting_form(title: str) -> dict[str, str]:
    return {"title": title, "kind": "in_person", "scope": "network", "starts_at": "2031-03-04T18:30",
            "ends_at": "2031-03-04T20:30", "timezone": "Europe/London", "venue": "Library", "capacity": "",
            "reminders": "1440"}


@pytest.mark.parametrize("claimed", [{"Origin": EVIL}, {"Referer": f"{EVIL}/cats.html"}, {"Origin": "null"}],
                         ids=["origin", "referer", "null-origin"])
async def test_a_form_posted_from_another_site_with_the_organisers_cookie_is_refused_and_changes_nothing(
    gateway, organiser_cookie, membership_db, claimed
):
    name = f"Hijacked region {uuid.uuid4().hex[:6]}"
    title = f"Hijacked meeting {uuid.uuid4().hex[:6]}"
    attempts = {
        "/admin/units": {"kind": "region", "name": name},
        "/events/organise/new": _meeting_form(title),
        "/campaigns/organise/new": {"title": title, "goal": "Take over", "summary": "", "issues": "",
                                    "scope_type": "network"},
        "/notifications/organise/digests/feed": {},
    }
    for path, form in attempts.items():
        answer = await gateway.post(path, data=form, cookies=organiser_cookie,
                                    headers={**claimed, "Accept": "text/html"})
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:300])
        assert "sent from another site" in answer.text and "<html" in answer.text.lower()  # a page, not JSON
    assert await membership_db.fetchval("SELECT count(*) FROM regions WHERE name = $1", name) == 0
    events_db = await asyncpg.connect(asyncpg_dsn("events"))
    campaigns_db = await asyncpg.connect(asyncpg_dsn("campaigns"))
    try:
        assert await events_db.fetchval("SELECT count(*) FROM meetings WHERE title = $1", title) == 0
        assert await campaigns_db.fetchval("SELECT count(*) FROM campaigns WHERE title = $1", title) == 0
    finally:
        await events_db.close()
        await campaigns_db.close()


async def test_the_same_forms_from_our_own_pages_work(gateway, organiser_cookie, membership_db):
    name = f"Real region {uuid.uuid4().hex[:6]}"
    title = f"Real meeting {uuid.uuid4().hex[:6]}"
    ours = {"Origin": launcher.GATEWAY_URL}
    unit = await gateway.post("/admin/units", data={"kind": "region", "name": name}, cookies=organiser_cookie,
                              headers=ours)
    assert unit.status_code == 303, unit.text
    assert await membership_db.fetchval("SELECT count(*) FROM regions WHERE name = $1", name) == 1
    meeting = await gateway.post("/events/organise/new", data=_meeting_form(title), cookies=organiser_cookie,
                                 headers={"Referer": f"{launcher.GATEWAY_URL}/events/organise/new"})
    assert meeting.status_code == 303, meeting.text


async def test_the_public_forms_and_the_apis_are_not_affected(gateway, network_organiser):
    """No session cookie (the embeddable join form from a partner's site), or credentials in a header: no check."""
    email = f"embedded-{uuid.uuid4().hex[:10]}@example.org"
    joined = await gateway.post("/join", headers={"Origin": EVIL},
                                data={"name": "Olive Morris", "email": email, "postcode": "B15 2TT",
                                      "email_consent": "yes"})
    assert joined.status_code != 403
    created = await gateway.post("/organisers/api-keys", headers={**network_organiser, "Origin": EVIL},
                                 data={"name": f"CRM {uuid.uuid4().hex[:6]}", "scope_type": "network", "scope_id": ""})
    assert created.status_code == 201


@pytest.mark.parametrize("path", ["/events/organise/sign-in", "/campaigns/organise/sign-in",
                                  "/notifications/organise/sign-in"])
async def test_no_route_takes_a_session_token_in_its_address(gateway, network_organiser, path):
    token = network_organiser["Authorization"][7:]
    answer = await gateway.get(path, params={"token": token})
    assert answer.status_code == 404
    assert auth.SESSION_COOKIE not in answer.headers.get("set-cookie", "")


async def test_the_session_cookie_is_secure_when_the_public_address_is_https(gateway):
    account = await active_account(gateway)
    form = {"email": account.email, "password": account.password, "code": account.next_code()}
    over_https = await gateway.post("/signin", data=form, headers={"X-Forwarded-Proto": "https"})
    assert over_https.status_code == 303
    cookie = over_https.headers["set-cookie"]
    assert cookie.startswith(f"{auth.SESSION_COOKIE}=") and "secure" in cookie.lower()
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
