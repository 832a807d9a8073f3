""""Tell us more" on the short join's thank-you page, attacked with someone else's address (issue #16; decisions
0006 and 0011), through the gateway: the page and what it answers are the same for a member's address as for a new
one; what a stranger tells more about a member changes nothing until the member confirms it from the page an
emailed link opens (which lists it); an address whose owner confirmed it since the join is asked the same way."""

from __future__ import annotations

import asyncpg
import httpx

from deploy.local import launcher
from tests.security.test_joins_for_existing_addresses import (
    a_member,
    comparable,
    form,
    link_token,
    snapshot,
    the_mail,
    unique_email,
)
from tests.support.mail import MailCatcher

PLANTED = {"skills": "Planted by a stranger", "groups": ["nottingham"], "subteams": ["research"]}


async def _join_from_a_browser(email: str) -> tuple[httpx.AsyncClient, httpx.Response, httpx.Response]:
    """A browser of its own opens the join form, joins with `email` and reads its thank-you page."""
    browser = httpx.AsyncClient(base_url=launcher.GATEWAY_URL, timeout=30)
    await browser.get("/join")
    joined = await browser.post("/join", data=form(email, postcode="CV1 2AB"))
    return browser, joined, await browser.get("/join/thanks")


async def test_a_strangers_tell_us_more_for_a_members_address_looks_alike_and_waits_for_the_member(
    gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection
) -> None:
    victim = await a_member(gateway, mail, membership_db, "more-victim")
    before = await snapshot(membership_db, victim)
    attacker, attack, attack_page = await _join_from_a_browser(victim)
    stranger, fresh, fresh_page = await _join_from_a_browser(unique_email("more-fresh"))
    try:
        assert comparable(attack) == comparable(fresh)
        assert comparable(attack_page) == comparable(fresh_page) and "/join/more" in attack_page.text
        told = await attacker.post("/join/more", data=PLANTED)
        told_fresh = await stranger.post("/join/more", data=PLANTED)
        assert comparable(told) == comparable(told_fresh) and told.status_code == 303
        assert comparable(await attacker.get("/join/thanks")) == comparable(await stranger.get("/join/thanks"))
    finally:
        await attacker.aclose()
        await stranger.aclose()
    assert await snapshot(membership_db, victim) == before

    # The join asked the member by email; what was told more replaced that request with a fresh link listing both.
    older = link_token(await the_mail(mail, victim, "Confirm the changes"), "/join/changes")
    newer = link_token(await the_mail(mail, victim, "Confirm the changes", count=2), "/join/changes")
    assert (await gateway.post("/join/changes", data={"token": older})).status_code == 400
    opened = await gateway.get("/join/changes", params={"token": newer})
    assert opened.status_code == 200 and "Planted by a stranger" in opened.text and "Nottingham" in opened.text
    assert await snapshot(membership_db, victim) == before


async def test_once_the_address_is_confirmed_tell_us_more_is_asked_of_its_owner_by_email(
    mail: MailCatcher, membership_db: asyncpg.Connection
) -> None:
    email = unique_email("more-confirmed")
    browser, joined, _ = await _join_from_a_browser(email)
    try:
        assert joined.status_code == 303
        welcome = await the_mail(mail, email, "Welcome")
        assert (await browser.post("/join/confirm", data={"token": link_token(welcome, "/join/confirm")})).status_code \
            == 200
        confirmed = await snapshot(membership_db, email)
        assert (await browser.post("/join/more", data=PLANTED)).status_code == 303
    finally:
        await browser.aclose()
    asked = await the_mail(mail, email, "Confirm the changes")
    assert await snapshot(membership_db, email) == confirmed
    async with httpx.AsyncClient(base_url=launcher.GATEWAY_URL) as owner:
        page = await owner.get("/join/changes", params={"token": link_token(asked, "/join/changes")})
    assert page.status_code == 200 and "Planted by a stranger" in page.text
    assert "Your name" not in page.text and "Your postcode" not in page.text  # telling more changes nothing else
