"""A member's own record, everywhere, and erasure reaching every copy (issue #15), against the running system: a
member who did one of everything gets every service's part in their data download, through links emailed to them;
after they are erased, no row of any service's database and no readable record of any topic holds their name,
address, postcode or the words they wrote."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from deploy.local import launcher
from services.membership.member_data import PART_WAIT
from shared import tokens
from tests.support.everything import Person, one_of_everything
from tests.support.inprocess import poll
from tests.support.joins import join
from tests.support.kafka import read_topic
from tests.support.mail import MailCatcher
from tests.support.organisers import organiser_headers
from tests.support.people import unique_email
from tests.support.tampering import tampered

SERVICES = ("membership", "events", "campaigns", "notifications")


@pytest.fixture
def organiser() -> dict[str, str]:
    return organiser_headers()


@pytest.fixture
async def person(gateway, organiser, membership_db, campaigns_db, events_db, notifications_db) -> Person:
    return await one_of_everything(gateway, organiser, membership_db, campaigns_db, events_db, notifications_db,
                                   "everything")


def preferences_link(member_id: str) -> str:
    return tokens.sign(launcher.secret_key(), tokens.PREFERENCES, {"m": member_id})


async def emailed_link(mail: MailCatcher, email: str, subject_starts: str, path: str) -> str:
    """The token of the `path` link in the email to `email` whose subject starts so (waiting for it)."""

    async def found() -> str | None:
        for message in await mail.messages(email):
            link = re.search(re.escape(path) + r"\?token=([\w.\-]+)", message["text"])
            if message["subject"].startswith(subject_starts) and link:
                return link.group(1)
        return None

    return str(await poll(found, 90, 0.5))


async def test_a_member_who_did_one_of_everything_downloads_every_services_part_from_an_emailed_link(
        gateway: httpx.AsyncClient, mail: MailCatcher, person: Person) -> None:
    asked = await gateway.post("/me/data", data={"token": preferences_link(person.member_id)})
    assert asked.status_code == 200 and "Check your email" in asked.text
    confirm = await emailed_link(mail, person.email, "Confirm: download", "/me/confirm")
    gathering = await gateway.post("/me/confirm", data={"token": confirm})
    assert gathering.status_code == 200 and "We are gathering your data" in gathering.text
    assert "attachment" not in gathering.headers.get("content-disposition", "")

    token = await emailed_link(mail, person.email, "Your data from", "/me/download")
    ready = next(m for m in await mail.messages(person.email) if m["subject"].startswith("Your data from"))
    assert "not complete" not in ready["text"]
    page = await gateway.get("/me/download", params={"token": token})
    assert page.status_code == 200 and person.campaign["title"] in page.text and person.meeting["title"] in page.text
    assert "Not complete yet" not in page.text
    file = await gateway.post("/me/download", data={"token": token})
    assert file.status_code == 200 and file.headers["content-type"].startswith("application/json")
    assert "attachment" in file.headers["content-disposition"]
    data = json.loads(file.text)

    assert data["complete"] is True and data["still_waiting_on"] == []
    # membership: the profile and the consent history
    assert data["membership"]["member"]["email"] == person.email
    assert data["membership"]["member"]["postcode"] == person.postcode
    assert data["membership"]["consent_records"][0]["granted"] is True
    # events: the RSVP and its attendance
    [rsvp] = data["events"]["rsvps"]
    assert rsvp["meeting"] == person.meeting["title"] and rsvp["status"] == "going" and rsvp["attended_at"]
    # campaigns: the signature, the pledge and the letter, in their own words
    actions = {a["kind"]: a for a in data["campaigns"]["actions"]}
    assert set(actions) == {"petition", "pledge", "write_to_mp"}
    assert actions["pledge"]["pledge"] == "I will speak up for patients."
    assert person.name in actions["write_to_mp"]["letter_body"] and actions["write_to_mp"]["mp"] == "Chris Holloway"
    assert data["campaigns"]["engagement"]["actions"] == 3
    # notifications: the emails sent to them, with what became of each
    emails = {e["kind"]: e for e in data["notifications"]["emails"]}
    assert {"mp_letter_copy", "confirm_download"} <= set(emails)
    assert emails["confirm_download"]["status"] == "sent" and emails["confirm_download"]["to"] == person.email

    # The link is the member's only: altered, it shows nothing.
    altered = await gateway.get("/me/download", params={"token": tampered(token)})
    assert altered.status_code == 400 and person.email not in altered.text


async def test_a_download_whose_parts_did_not_all_arrive_is_sent_after_a_while_naming_the_services_it_waits_on(
        gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection) -> None:
    email = unique_email("waiting")
    assert await join(gateway, email, name="Wanda Waiting") == 303
    member_id = await poll(lambda: membership_db.fetchval("SELECT id FROM members WHERE email_normalised = $1", email))
    # A request no service heard of (as if every other service were down since), asked for longer ago than the wait.
    request_id = str(uuid.uuid4())
    await membership_db.execute(
        "INSERT INTO member_data_requests (id, member_id, requested_at) VALUES ($1, $2, $3)",
        request_id, member_id, datetime.now(UTC) - PART_WAIT - timedelta(minutes=1))

    token = await emailed_link(mail, email, "Your data from", "/me/download")
    ready = next(m for m in await mail.messages(email) if m["subject"].startswith("Your data from"))
    assert "not complete: events, campaigns, notifications had not answered" in ready["text"]
    page = await gateway.get("/me/download", params={"token": token})
    assert page.status_code == 200 and "Not complete yet" in page.text and "Still waiting for this part" in page.text
    data = (await gateway.post("/me/download", data={"token": token})).json()
    assert data["complete"] is False and data["still_waiting_on"] == ["events", "campaigns", "notifications"]
    assert data["membership"]["member"]["email"] == email and data["events"] is None


# -- erasure reaches every copy -----------------------------------------------------------------------------------
def needles(person: Person, *more: str) -> list[str]:
    """What must be found nowhere: the name, the address, the postcode (with and without its space), free text."""
    return [person.name, person.email, person.postcode, person.postcode.replace(" ", ""), *more]


async def rows_holding(words: list[str]) -> list[str]:
    """Every row, in every table of every service's database, that holds one of `words` (the row cast to text)."""
    patterns = [f"%{w}%" for w in words]
    found: list[str] = []
    for service in SERVICES:
        conn = await asyncpg.connect(launcher.database_url(service).replace("postgresql+asyncpg://", "postgresql://"))
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_type = 'BASE TABLE'")
            for table in tables:
                name = table["table_name"]
                rows = await conn.fetch(f'SELECT t::text AS row FROM "{name}" t WHERE t::text ILIKE ANY($1::text[])',
                                        patterns)
                found.extend(f"{service}.{name}: {r['row'][:300]}" for r in rows)
        finally:
            await conn.close()
    return found


async def records_holding(words: list[str]) -> list[str]:
    """Every record of every topic (from the beginning) whose readable bytes (key, value, headers) hold one of
    `words`; sealed fields are ciphertext, unreadable once the key is shredded."""
    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if not t.startswith("__"))
    finally:
        await admin.close()
    lowered = [w.lower().encode() for w in words]
    found: list[str] = []
    for topic in names:
        for record in await read_topic(topic, timeout=60):
            readable = b" ".join([record.key or b"", record.value or b"",
                                  *(v or b"" for _, v in record.headers or ())]).lower()
            found.extend(f"{topic}@{record.offset}: {w.decode()}" for w in lowered if w in readable)
    return found


async def test_erasing_a_member_who_did_one_of_everything_leaves_their_name_address_and_postcode_nowhere(
        gateway: httpx.AsyncClient, mail: MailCatcher, membership_db: asyncpg.Connection,
        notifications_db: asyncpg.Connection, person: Person) -> None:
    reason = f"Moving away to Leeds {uuid.uuid4().hex[:8]}"
    preferences = preferences_link(person.member_id)
    assert (await gateway.post("/me/leave", data={"token": preferences, "reason": reason})).status_code == 200
    words = needles(person, reason)
    before = await rows_holding(words)
    assert any(".actions" in r for r in before) and any(".rsvps" in r for r in before)  # the search finds them

    asked = await gateway.post("/me/erase", data={"token": preferences, "confirm": "erase"})
    assert asked.status_code == 200 and "Check your email" in asked.text
    confirm = await emailed_link(mail, person.email, "Confirm: erase", "/me/confirm")
    erased = await gateway.post("/me/confirm", data={"token": confirm})
    assert erased.status_code == 200 and "being erased" in erased.text
    assert await membership_db.fetchval("SELECT status FROM members WHERE id = $1", person.member_id) == "erased"

    async def nowhere_in_the_databases() -> bool:
        return not await rows_holding(words)

    try:
        await poll(nowhere_in_the_databases, 90, 1.0)
    except AssertionError:
        pytest.fail("still held after erasure:\n" + "\n".join(await rows_holding(words)))
    # One pass over every topic: the meeting's title (public, in clear) shows the search reads what it should.
    title = person.meeting["title"]
    records = await records_holding([*words, title])
    assert any(title.lower() in r for r in records)
    held = [r for r in records if title.lower() not in r]
    assert held == [], "readable on a topic after erasure:\n" + "\n".join(held)
