"""The public forms of events and campaigns with someone else's address (#14.2, #14.3) and in a burst (#14.8),
through the gateway against the running system.

A repeat (an RSVP, a signature, a pledge with an address already used) answers byte for byte like a first time
and changes nothing; the address's owner, and only they, gets an email with the link to what is theirs. A letter
to an MP goes only once the address it was written with confirms it. A burst from one client address is
stopped with a 429 that says when to try again, and stores nothing more.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.campaigns.conftest import LETTER, PETITION, PLEDGE, ask_of, ask_path, launch
from tests.conftest import asyncpg_dsn
from tests.events.conftest import schedule
from tests.support.mail import MailCatcher
from tests.support.organisers import organiser_headers

BROWSER = {"Accept": "text/html"}


@pytest.fixture
async def events_db(system: None) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn("events"))
    yield conn
    await conn.close()


@pytest.fixture
async def campaigns_db(system: None) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn("campaigns"))
    yield conn
    await conn.close()


def someone(tag: str) -> dict[str, str]:
    token = uuid.uuid4().hex[:10]
    return {"name": f"{tag.title()} Example {token}", "email": f"{tag}-{token}@example.org"}


def answer(response: httpx.Response) -> tuple[int, str | None, bytes]:
    """What a person (or an attacker) learns from an answer: its status, where it sends them, its body."""
    return response.status_code, response.headers.get("location"), response.content


def a_client_address() -> str:
    """An address from a documentation range, told to the services by the gateway as the client's."""
    return f"198.51.100.{random.randint(1, 254)}" if random.random() < 0.5 else f"203.0.113.{random.randint(1, 254)}"


async def _first_and_repeat(gateway: httpx.AsyncClient, path: str, form: dict[str, str],
                            attacker_form: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
    first = await gateway.post(path, data=form, headers=BROWSER)
    repeat = await gateway.post(path, data=attacker_form, headers=BROWSER)
    return first, repeat


# RSVPs ----------------------------------------------------------------------------------------------------------
async def test_an_rsvp_with_someone_elses_address_answers_as_a_first_and_only_their_owner_hears_of_it(
    gateway: httpx.AsyncClient, events_db: asyncpg.Connection, mail: MailCatcher
) -> None:
    meeting = await schedule(gateway, organiser_headers(), capacity=20)
    victim = someone("victim")
    path = f"/events/{meeting['id']}/rsvp"
    first = await gateway.post(path, data={**victim, "guests": "1"}, headers=BROWSER)
    before = await events_db.fetchrow("SELECT * FROM rsvps WHERE meeting_id = $1", meeting["id"])
    # The attacker knows the address, not the rest; they type their own name and no guests.
    repeat = await gateway.post(path, data={"name": "Someone Else", "email": victim["email"].upper()},
                                headers=BROWSER)

    assert answer(first) == answer(repeat)
    assert first.status_code == 303 and first.headers["location"] == f"/events/{meeting['id']}/rsvp/sent"
    page_after_first, page_after_repeat = (await gateway.get(first.headers["location"]),
                                           await gateway.get(repeat.headers["location"]))
    assert page_after_first.content == page_after_repeat.content and "Check your email" in page_after_first.text
    assert victim["email"] not in page_after_repeat.text and "/events/rsvps/" not in page_after_repeat.text
    assert dict(await events_db.fetchrow("SELECT * FROM rsvps WHERE meeting_id = $1", meeting["id"])) == dict(before)
    assert before["guests"] == 1 and before["name"] == victim["name"]

    # The owner of the address gets their confirmation and a note about the repeat with their own link (in either
    # order: the senders' connections send side by side).
    emails = await mail.wait_for(victim["email"], count=2, timeout=60)
    [confirmation] = [e for e in emails if e["subject"].startswith("You're going")]
    [notice] = [e for e in emails if e["subject"] == f"Your RSVP: {meeting['title']}"]
    assert "RSVPed again with this email address" in notice["text"] and "you have a place" in notice["text"]
    own_link = re.search(r"http\S+(/events/rsvps/\S+)", notice["text"])
    assert own_link is not None
    own_page = await gateway.get(own_link.group(1))
    assert own_page.status_code == 200 and "You have a place" in own_page.text and "1 guest" in own_page.text


# Signatures and pledges -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["petition", "pledge"])
async def test_a_signature_or_pledge_with_someone_elses_address_answers_as_a_first_and_changes_nothing(
    gateway: httpx.AsyncClient, campaigns_db: asyncpg.Connection, mail: MailCatcher, kind: str
) -> None:
    campaign = await launch(gateway, organiser_headers(), asks=[PETITION, PLEDGE])
    victim = someone("signer")
    path = ask_path(campaign, kind)
    words = {"pledge_text": "I will speak up."} if kind == "pledge" else {"comment": "For my mum."}
    first, repeat = await _first_and_repeat(
        gateway, path, {**victim, **words},
        {"name": "Someone Else", "email": victim["email"], "pledge_text": "Something else", "comment": "Not mine"})

    assert answer(first) == answer(repeat)
    assert first.status_code == 303 and first.headers["location"] == f"{path}/thanks"
    thanks_first, thanks_repeat = await gateway.get(first.headers["location"]), await gateway.get(path + "/thanks")
    assert thanks_first.content == thanks_repeat.content and "before" not in thanks_repeat.text
    rows = await campaigns_db.fetch("SELECT name, comment, pledge_text FROM actions WHERE ask_id = $1",
                                    ask_of(campaign, kind)["id"])
    assert [tuple(r) for r in rows] == [(victim["name"], words.get("comment"), words.get("pledge_text"))]

    # The first signature's confirmation, then the notice of the repeat (and nothing more).
    await mail.wait_for(victim["email"], count=2, timeout=60)
    received = await mail.settle(victim["email"])
    [notice] = [m for m in received if m["subject"] == "You had already taken part"]
    assert len(received) == 2, [m["subject"] for m in received]
    done = "signed this petition" if kind == "petition" else "made this pledge"
    assert f"you had already {done}" in notice["text"]
    assert f"/campaigns/{campaign['id']}/asks/{ask_of(campaign, kind)['id']}" in notice["text"]


# Letters to MPs -------------------------------------------------------------------------------------------------
async def _constituency(campaigns_db: asyncpg.Connection) -> tuple[str, str]:
    """A constituency of its own (one postcode, one MP address) in the MP dataset: a postcode and the MP's email."""
    tag = uuid.uuid4().hex[:8]
    unit = "".join(random.choices("ABDEFGHJLNPQRSTUWXYZ", k=2))
    postcode = f"ZE{random.randint(10, 99)} {random.randint(1, 9)}{unit}"
    mp_email = f"mp-{tag}@parliament.example"
    await campaigns_db.execute(
        "INSERT INTO constituencies (code, name, mp_name, mp_party, mp_email, updated_at) "
        "VALUES ($1, $2, $3, '', $4, now())", f"T-{tag}", f"Testshire {tag}", f"Pat Member {tag}", mp_email)
    await campaigns_db.execute(
        "INSERT INTO constituency_postcodes (postcode_key, constituency_code) VALUES ($1, $2) "
        "ON CONFLICT (postcode_key) DO UPDATE SET constituency_code = EXCLUDED.constituency_code",
        postcode, f"T-{tag}")
    return postcode, mp_email


async def test_a_letter_in_someone_elses_name_waits_until_the_address_confirms_it_and_goes_once(
    gateway: httpx.AsyncClient, campaigns_db: asyncpg.Connection, mail: MailCatcher
) -> None:
    campaign = await launch(gateway, organiser_headers(), asks=[LETTER])
    postcode, mp_email = await _constituency(campaigns_db)
    victim = someone("writer")
    path = ask_path(campaign, "write_to_mp")
    forged = {**victim, "postcode": postcode, "step": "send", "letter_subject": "Words not mine",
              "letter_body": "Dear MP,\n\nSomething the writer never said.\n"}
    sent = await gateway.post(path, data=forged, headers=BROWSER)
    assert sent.status_code == 303 and sent.headers["location"] == f"{path}/thanks"
    assert "Check your email to send your letter" in (await gateway.get(f"{path}/thanks")).text

    [confirmation] = await mail.wait_for(victim["email"], timeout=60)
    assert confirmation["subject"].startswith("Confirm your letter to Pat Member")
    link = re.search(r"http\S+(/campaigns/letters/\S+)", confirmation["text"])
    assert link is not None
    # Opening the link (as a mail scanner does) shows the letter and sends nothing.
    page = await gateway.get(link.group(1), headers=BROWSER)
    assert page.status_code == 200 and "Something the writer never said." in page.text
    assert await mail.settle(mp_email, seconds=3) == []
    row = await campaigns_db.fetchrow("SELECT letter_confirmed_at FROM actions WHERE ask_id = $1",
                                      ask_of(campaign, "write_to_mp")["id"])
    assert row["letter_confirmed_at"] is None

    confirmed = await gateway.post(link.group(1), headers=BROWSER)
    assert confirmed.status_code == 200 and "Your letter is on its way" in confirmed.text
    again = await gateway.post(link.group(1), headers=BROWSER)
    assert again.status_code == 200 and "Your letter is on its way" in again.text
    [letter] = await mail.wait_for(mp_email, timeout=60)
    assert letter["subject"] == "Words not mine" and "Something the writer never said." in letter["text"]
    assert len(await mail.settle(mp_email, seconds=3)) == 1


async def test_a_forged_letter_confirmation_link_sends_nothing(gateway: httpx.AsyncClient) -> None:
    forged = await gateway.post(f"/campaigns/letters/{uuid.uuid4().hex}", headers=BROWSER)
    assert forged.status_code == 404 and "Link not recognised" in forged.text


# Rate limits ----------------------------------------------------------------------------------------------------
async def test_a_burst_of_rsvps_from_one_client_address_is_stopped_and_stores_nothing_more(
    gateway: httpx.AsyncClient, events_db: asyncpg.Connection
) -> None:
    meeting = await schedule(gateway, organiser_headers(), capacity=100)
    limit = await events_db.fetchval("SELECT max_count FROM rate_limits WHERE name = 'rsvp-per-ip'")
    client = {"X-Forwarded-For": a_client_address(), **BROWSER}
    path = f"/events/{meeting['id']}/rsvp"
    answers = [await gateway.post(path, data=someone("burst"), headers=client) for _ in range(limit)]
    assert {r.status_code for r in answers} == {303}
    stored = await events_db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", meeting["id"])

    over = await gateway.post(path, data=someone("burst"), headers=client)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    assert "Too many attempts" in over.text and "try again" in over.text
    assert await events_db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", meeting["id"]) == stored
    # Another client (the gateway says so) is not held up by this one.
    other = await gateway.post(path, data=someone("other"), headers={"X-Forwarded-For": "192.0.2.77", **BROWSER})
    assert other.status_code == 303


async def test_letters_are_limited_per_client_address(gateway: httpx.AsyncClient,
                                                      campaigns_db: asyncpg.Connection) -> None:
    campaign = await launch(gateway, organiser_headers(), asks=[LETTER])
    postcode, _ = await _constituency(campaigns_db)
    limit = await campaigns_db.fetchval("SELECT max_count FROM rate_limits WHERE name = 'letter-per-ip'")
    client = {"X-Forwarded-For": a_client_address(), **BROWSER}
    path = ask_path(campaign, "write_to_mp")

    def letter() -> dict[str, str]:
        return {**someone("letters"), "postcode": postcode, "step": "send", "letter_subject": "Hello",
                "letter_body": "Please act."}

    answers = await asyncio.gather(*(gateway.post(path, data=letter(), headers=client) for _ in range(limit)))
    assert {r.status_code for r in answers} == {303}
    over = await gateway.post(path, data=letter(), headers=client)
    assert over.status_code == 429 and "Retry-After" in over.headers
    assert await campaigns_db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1",
                                       ask_of(campaign, "write_to_mp")["id"]) == limit
