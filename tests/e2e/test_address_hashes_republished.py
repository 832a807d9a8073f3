"""Members who joined before MemberJoined carried their address's keyed hash (decision 0008) are linkable too:
membership publishes each such member's hash once (`republish-address-hashes`, also at start-up), and what they
did with their address, before and after, becomes theirs in campaigns and events. Run again, it publishes nobody.

Such a member is made as the past left them: joined, but the other services' mirrors hold no hash for them and
membership still has their hash to publish."""

from __future__ import annotations

import re
import uuid

import asyncpg
import httpx

from tests.support.accounts import membership_cli
from tests.support.everything import ask_path, campaign, meeting
from tests.support.inprocess import poll
from tests.support.joins import join
from tests.support.organisers import organiser_headers
from tests.support.people import unique_email


async def _published(output: str) -> int:
    found = re.search(r"address hashes published: (\d+)", output)
    assert found, output
    return int(found.group(1))


async def _from_before_the_hash(membership_db: asyncpg.Connection, campaigns_db: asyncpg.Connection,
                                events_db: asyncpg.Connection, email: str, name: str, gateway: httpx.AsyncClient
                                ) -> str:
    """A member as one who joined before the hash existed is now: known everywhere, by no hash."""
    assert await join(gateway, email, name=name) == 303
    member_id = str(await poll(lambda: membership_db.fetchval(
        "SELECT id FROM members WHERE email_normalised = $1", email)))
    for db in (campaigns_db, events_db):
        await poll(lambda: db.fetchval("SELECT email_hash FROM members WHERE member_id = $1", member_id))  # noqa: B023
        await db.execute("UPDATE members SET email_hash = NULL WHERE member_id = $1", member_id)
    await membership_db.execute("UPDATE members SET address_hash_due = true WHERE id = $1", member_id)
    return member_id


async def test_a_member_from_before_the_hash_gets_what_they_did_once_membership_republishes_it(
        gateway, membership_db, campaigns_db, events_db):
    organiser = organiser_headers()
    email, name = unique_email("before-hash"), f"Claudia Jones {uuid.uuid4().hex[:6]}"
    member_id = await _from_before_the_hash(membership_db, campaigns_db, events_db, email, name, gateway)
    petition, rally = await campaign(gateway, organiser), await meeting(gateway, organiser)

    # What they do now with their address is nobody's: no service can tell it is theirs.
    signed = await gateway.post(ask_path(petition, "petition"), data={"name": name, "email": f" {email.upper()}"})
    assert signed.status_code == 303, signed.text
    rsvp = await gateway.post(f"/events/{rally['id']}/rsvp", data={"name": name, "email": email})
    assert rsvp.status_code == 303, rsvp.text
    action = await poll(lambda: campaigns_db.fetchrow(
        "SELECT id, member_id FROM actions WHERE campaign_id = $1", petition["id"]))
    stored_rsvp = await poll(lambda: events_db.fetchrow("SELECT id, member_id FROM rsvps WHERE meeting_id = $1",
                                                        rally["id"]))
    assert action["member_id"] is None and stored_rsvp["member_id"] is None

    # Membership publishes the hashes still due: the petition and the RSVP become theirs ...
    assert await _published(await membership_cli("republish-address-hashes")) >= 1
    assert not await membership_db.fetchval("SELECT address_hash_due FROM members WHERE id = $1", member_id)
    await poll(lambda: campaigns_db.fetchval("SELECT member_id = $2 FROM actions WHERE id = $1", action["id"],
                                             member_id))
    await poll(lambda: events_db.fetchval("SELECT member_id = $2 FROM rsvps WHERE id = $1", stored_rsvp["id"],
                                          member_id))
    # ... and so is what they do afterwards, as it arrives.
    pledged = await gateway.post(ask_path(petition, "pledge"), data={
        "name": name, "email": email, "pledge_text": "I will organise my street."})
    assert pledged.status_code == 303, pledged.text
    assert await poll(lambda: campaigns_db.fetchval(
        "SELECT count(*) = 2 FROM actions WHERE campaign_id = $1 AND member_id = $2", petition["id"], member_id))

    # Once published, never again: a second run has nobody left to announce.
    assert await _published(await membership_cli("republish-address-hashes")) == 0
