"""Revocation works everywhere, at once, and fails closed (issue #14, point 4).

A signed-out session, a revoked API key, a disabled organiser and a revoked role are refused by every service
behind the gateway within seconds (polled with a deadline), and what the organiser pages did is the only change;
a service that cannot read its revocation record refuses what it cannot check.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx

from deploy.local import launcher
from services.membership import seeds
from shared import auth, tokens
from tests.conftest import asyncpg_dsn
from tests.membership.conftest import make_organiser
from tests.support.accounts import Account, active_account

# One organiser page of each service, and each service's OSDI collection (notifications has no API-key route).
ORGANISER_PAGES = ("/members", "/events/organise", "/notifications/organise", "/campaigns/organise")
KEY_ROUTES = ("/api/v2/people", "/api/v2/events", "/api/v2/petitions")
WITHIN_S = 20.0
BIRMINGHAM = seeds.unit_id("region", "birmingham-black-country")


async def _statuses(gateway: httpx.AsyncClient, paths: tuple[str, ...], headers: dict[str, str]) -> dict[str, int]:
    answers = await asyncio.gather(*(gateway.get(p, headers=headers) for p in paths))
    return {p: r.status_code for p, r in zip(paths, answers, strict=True)}


async def accepted_everywhere(gateway: httpx.AsyncClient, paths: tuple[str, ...], headers: dict[str, str]) -> None:
    statuses = await _statuses(gateway, paths, headers)
    assert set(statuses.values()) == {200}, statuses


async def refused_everywhere_within(
    gateway: httpx.AsyncClient, paths: tuple[str, ...], headers: dict[str, str], seconds: float = WITHIN_S
) -> None:
    """Every path refuses (401) before the deadline; polled, never slept on."""
    deadline = time.monotonic() + seconds
    while True:
        statuses = await _statuses(gateway, paths, headers)
        if set(statuses.values()) == {401}:
            return
        assert time.monotonic() < deadline, f"still not refused everywhere after {seconds} s: {statuses}"
        await asyncio.sleep(0.2)


async def signed_in(gateway: httpx.AsyncClient, account: Account, code: str | None = None) -> dict[str, str]:
    """A real session: sign in with password and code; the Bearer headers of the token it issues."""
    answer = await gateway.post(
        "/signin", json={"email": account.email, "password": account.password, "code": code or account.next_code()}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


async def api_key(gateway: httpx.AsyncClient, organiser: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A network key made on the API keys page by `organiser`: (its id, the headers that send it)."""
    created = await gateway.post("/organisers/api-keys", headers=organiser,
                                 data={"name": f"CRM {uuid.uuid4().hex[:6]}", "scope_type": "network", "scope_id": ""})
    assert created.status_code == 201, created.text
    key = created.text.split('<code id="new-api-key">')[1].split("</code>")[0]
    return str(auth.verify(launcher.secret_key(), key, auth.OSDI_API).key_id), {"OSDI-API-Token": key}


async def mirrored_in_notifications(db: asyncpg.Connection, organiser_id: str) -> str:
    """The organiser's feed token, once notifications mirrored them with a digest subscription."""
    async def ready() -> str | None:
        row = await db.fetchrow(
            "SELECT o.feed_token FROM organisers o JOIN digest_subscriptions s USING (organiser_id) "
            "WHERE o.organiser_id = $1", organiser_id)
        return row["feed_token"] if row else None

    deadline = time.monotonic() + WITHIN_S
    while not (token := await ready()):
        assert time.monotonic() < deadline, "notifications never mirrored the organiser"
        await asyncio.sleep(0.2)
    return token


async def test_a_signed_out_session_is_refused_by_every_service_while_a_new_one_works(gateway, network_organiser):
    account = await active_account(gateway)
    session = await signed_in(gateway, account)
    await accepted_everywhere(gateway, ORGANISER_PAGES, session)
    cookie = {auth.SESSION_COOKIE: session["Authorization"][7:]}

    out = await gateway.post("/signin/out", cookies=cookie, headers={"Origin": launcher.GATEWAY_URL})
    assert out.status_code == 303 and out.headers["location"] == "/signin"

    await refused_everywhere_within(gateway, ORGANISER_PAGES, session)
    as_cookie = {"Cookie": f"{auth.SESSION_COOKIE}={cookie[auth.SESSION_COOKIE]}"}
    await refused_everywhere_within(gateway, ORGANISER_PAGES, as_cookie)
    again = await signed_in(gateway, account, account.recovery_codes[0])  # a code of this time step was used
    await accepted_everywhere(gateway, ORGANISER_PAGES, again)  # only that session ended


async def test_a_revoked_api_key_is_refused_by_every_service_and_the_others_still_work(gateway, network_organiser):
    key_id, key = await api_key(gateway, network_organiser)
    _, other_key = await api_key(gateway, network_organiser)
    await accepted_everywhere(gateway, KEY_ROUTES, key)

    revoked = await gateway.post(f"/organisers/api-keys/{key_id}/revoke", headers=network_organiser)
    assert revoked.status_code == 303

    await refused_everywhere_within(gateway, KEY_ROUTES, key)
    await accepted_everywhere(gateway, KEY_ROUTES, other_key)


async def test_disabling_an_organiser_asks_first_then_ends_their_sessions_keys_digests_and_feed_everywhere(
    gateway, network_organiser, membership_db, notifications_db
):
    name = f"Target {uuid.uuid4().hex[:6]}"
    target = await active_account(gateway, name=name)
    feed_token = await mirrored_in_notifications(notifications_db, target.organiser_id)
    session = await signed_in(gateway, target)
    _, key = await api_key(gateway, session)
    await accepted_everywhere(gateway, ORGANISER_PAGES, session)
    await accepted_everywhere(gateway, KEY_ROUTES, key)
    assert (await gateway.get(f"/feeds/digests/{feed_token}.atom")).status_code == 200

    listed = await gateway.get("/organisers", headers=network_organiser)
    assert f'href="/organisers/{target.organiser_id}/disable">Disable {name}</a>' in listed.text
    confirm = await gateway.get(f"/organisers/{target.organiser_id}/disable", headers=network_organiser)
    assert confirm.status_code == 200 and f"<h1>Disable {name}?</h1>" in confirm.text
    assert "API key" in confirm.text and "digest" in confirm.text
    assert await membership_db.fetchval("SELECT status FROM organisers WHERE id = $1", target.organiser_id) == "active"

    done = await gateway.post(f"/organisers/{target.organiser_id}/disable", headers=network_organiser)
    assert done.status_code == 303

    await refused_everywhere_within(gateway, ORGANISER_PAGES, session)
    await refused_everywhere_within(gateway, KEY_ROUTES, key)
    status = await membership_db.fetchval("SELECT status FROM organisers WHERE id = $1", target.organiser_id)
    assert status == "disabled"
    refused = await gateway.post("/signin", json={"email": target.email, "password": target.password,
                                                  "code": target.next_code()})
    assert refused.status_code == 401
    assert await notifications_db.fetchval(
        "SELECT count(*) FROM digest_subscriptions WHERE organiser_id = $1", target.organiser_id) == 0
    assert (await gateway.get(f"/feeds/digests/{feed_token}.atom")).status_code == 404


async def test_an_organiser_cannot_disable_themselves_or_someone_outside_their_region(gateway, membership_db):
    own_id, own = await make_organiser(membership_db, "region", BIRMINGHAM)
    network_account = await active_account(gateway)
    assert (await gateway.get(f"/organisers/{own_id}/disable", headers=own)).status_code == 404
    outside = await gateway.post(f"/organisers/{network_account.organiser_id}/disable", headers=own)
    assert outside.status_code == 404
    assert await membership_db.fetchval(
        "SELECT status FROM organisers WHERE id = $1", network_account.organiser_id) == "active"


async def test_revoking_a_role_asks_first_then_ends_that_scopes_sessions_and_digest_everywhere(
    gateway, network_organiser, membership_db, notifications_db
):
    name = f"Regional {uuid.uuid4().hex[:6]}"
    regional = await active_account(gateway, name=name, scope="region", scope_id=BIRMINGHAM)
    await mirrored_in_notifications(notifications_db, regional.organiser_id)
    session = await signed_in(gateway, regional)
    await accepted_everywhere(gateway, ORGANISER_PAGES, session)
    grant_id = await membership_db.fetchval(
        "SELECT id FROM role_grants WHERE organiser_id = $1 AND revoked_at IS NULL", regional.organiser_id)

    roles = await gateway.get("/admin/roles", headers=network_organiser)
    assert f"Revoke {name}'s role" in roles.text and grant_id in roles.text
    confirm = await gateway.get(f"/admin/roles/{grant_id}/revoke", headers=network_organiser)
    assert confirm.status_code == 200 and f"Revoke {name}'s role?" in confirm.text
    assert "Birmingham" in confirm.text  # the region by name, never its id
    assert await membership_db.fetchval("SELECT revoked_at FROM role_grants WHERE id = $1", grant_id) is None

    done = await gateway.post(f"/admin/roles/{grant_id}/revoke", headers=network_organiser)
    assert done.status_code == 303

    await refused_everywhere_within(gateway, ORGANISER_PAGES, session)
    assert await membership_db.fetchval("SELECT revoked_at FROM role_grants WHERE id = $1", grant_id) is not None
    refused = await gateway.post("/signin", json={"email": regional.email, "password": regional.password,
                                                  "code": regional.next_code()})
    assert refused.status_code == 401  # no role left to sign in with
    deadline = time.monotonic() + WITHIN_S
    while await notifications_db.fetchval(
        "SELECT count(*) FROM digest_subscriptions WHERE organiser_id = $1", regional.organiser_id
    ):
        assert time.monotonic() < deadline, "the revoked scope's digest subscription is still there"
        await asyncio.sleep(0.2)


async def test_a_service_that_cannot_read_its_revocation_record_refuses_sessions_and_keys(gateway, network_organiser):
    """Fails closed: with events' revocation table unreadable, events refuses; put back, it accepts again."""
    _, key = await api_key(gateway, network_organiser)
    await accepted_everywhere(gateway, ("/events/organise",), network_organiser)
    events_db = await asyncpg.connect(asyncpg_dsn("events"))
    try:
        await events_db.execute("ALTER TABLE revocations RENAME TO revocations_unreadable")
        try:
            page = await gateway.get("/events/organise", headers=network_organiser)
            api = await gateway.get("/api/v2/events", headers=key)
        finally:
            await events_db.execute("ALTER TABLE revocations_unreadable RENAME TO revocations")
        assert page.status_code == 503 and api.status_code == 503
        await accepted_everywhere(gateway, ("/events/organise", "/api/v2/events"), {**network_organiser, **key})
    finally:
        await events_db.close()


async def test_a_session_without_an_id_cannot_be_ended_so_no_service_accepts_it(gateway, membership_db):
    organiser_id, _ = await make_organiser(membership_db, "network")
    payload = {"o": organiser_id, "t": "network", "s": None}  # as sessions were signed before they had ids
    old_style = tokens.sign(launcher.secret_key(), auth.ORGANISER_SESSION, payload)
    statuses = await _statuses(gateway, ORGANISER_PAGES, {"Authorization": f"Bearer {old_style}"})
    assert set(statuses.values()) == {401}, statuses
