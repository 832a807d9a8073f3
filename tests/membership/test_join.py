"""Joining: the full form, placement by postcode, proof of consent, double opt-in, joining again, spam limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest
from itsdangerous.timed import TimestampSigner

from services.membership import seeds
from shared import tokens
from shared.crypto import unseal
from shared.events.envelope import Sealed
from tests.membership.conftest import confirm_join_change, join_form, member_by_email, of_member, unique_email

BIRMINGHAM = seeds.unit_id("region", "birmingham-black-country")
COVENTRY_WARWICKSHIRE = seeds.unit_id("region", "coventry-warwickshire")


def group(slug: str) -> str:
    return seeds.unit_id("group", slug)


def subteam(slug: str) -> str:
    return seeds.unit_id("subteam", slug)


async def key_of(db, member_id: str) -> bytes:
    return await db.fetchval("SELECT key FROM subject_keys WHERE key_id = $1", member_id)


async def test_full_join_form_stores_every_choice_with_proof_of_consent_and_announces_it(client, db, kafka):
    email = unique_email("full")
    response = await client.post(
        "/join",
        data=join_form(
            email,
            postcode="b29 6aa",
            interests=["racism-at-work", "racism-in-policing"],
            engagement_level="organise",
            skills="Translation (Urdu, Punjabi), first aid",
            time_available="An evening a fortnight",
            subteams=["media", "legal-observers"],
            groups=["birmingham-south", "handsworth-perry-barr"],
            organisation="midlands-migrant-support",
        ),
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert response.status_code == 303 and response.headers["location"] == "/join/thanks"

    member = await member_by_email(db, email)
    assert member["postcode"] == "B29 6AA" and member["region_id"] == BIRMINGHAM
    assert member["suggested_group_id"] == group("birmingham-south")
    assert member["interests"] == ["racism-at-work", "racism-in-policing"] and member["engagement_level"] == "organise"
    assert member["skills"].startswith("Translation") and member["time_available"] == "An evening a fortnight"
    assert member["organisation_id"] == seeds.unit_id("partner", "midlands-migrant-support")
    assert member["status"] == "pending"
    groups = await db.fetch("SELECT group_id FROM member_groups WHERE member_id = $1", member["id"])
    assert {r["group_id"] for r in groups} == {group("birmingham-south"), group("handsworth-perry-barr")}
    subteams = await db.fetch("SELECT subteam_id FROM member_subteams WHERE member_id = $1", member["id"])
    assert {r["subteam_id"] for r in subteams} == {subteam("media"), subteam("legal-observers")}

    [consent] = await db.fetch("SELECT * FROM consent_records WHERE member_id = $1", member["id"])
    assert consent["granted"] and consent["wording_version"] == "email-2026-11" and consent["source"] == "join-form"
    assert consent["recorded_at"] is not None
    assert consent["ip_hash"] and "203.0.113.7" not in consent["ip_hash"] and len(consent["ip_hash"]) == 64

    [joined] = await kafka.wait_for(of_member(member["id"], "MemberJoined"))
    data = joined.data
    assert data["region_id"] == BIRMINGHAM and set(data["group_ids"]) == {
        group("birmingham-south"),
        group("handsworth-perry-barr"),
    }
    assert data["suggested_group_id"] == group("birmingham-south") and data["engagement_level"] == "organise"
    assert set(data["subteam_ids"]) == {subteam("media"), subteam("legal-observers")}
    assert data["consent_wording_version"] == "email-2026-11" and data["confirmation_required"] is True
    assert email not in joined.model_dump_json()  # personal fields travel sealed
    key = await key_of(db, member["id"])
    assert unseal(Sealed(**data["email"]), key) == email and unseal(Sealed(**data["postcode"]), key) == "B29 6AA"
    await kafka.wait_for(lambda e: e.type == "SubjectKeyIssued" and e.subject_id == member["id"])


async def test_consent_proof_keeps_a_keyed_hash_of_the_address_not_the_address(client, db, membership_settings):
    email = unique_email("iphash")
    await client.post("/join", data=join_form(email), headers={"X-Forwarded-For": "198.51.100.23"})
    member = await member_by_email(db, email)
    ip_hash = await db.fetchval("SELECT ip_hash FROM consent_records WHERE member_id = $1", member["id"])
    expected = hmac.new(membership_settings.secret_key.encode(), b"198.51.100.23", hashlib.sha256).hexdigest()
    assert ip_hash == expected and ip_hash != hashlib.sha256(b"198.51.100.23").hexdigest()


@pytest.mark.parametrize(
    ("postcode", "region", "nearest"),
    [
        ("B1 1AA", "birmingham-black-country", "birmingham-central"),  # the area's default
        ("B20 3QP", "birmingham-black-country", "handsworth-perry-barr"),  # a district of its own
        ("CV32 4AB", "coventry-warwickshire", "warwick-leamington"),
        ("NG1 5FS", "east-midlands", "nottingham"),
        ("SW1A 1AA", None, None),  # outside the network's table: accepted, placed nowhere
    ],
)
async def test_postcode_places_member_in_region_and_nearest_group(client, db, postcode, region, nearest):
    email = unique_email("placed")
    assert (await client.post("/join", data=join_form(email, postcode=postcode))).status_code == 303
    member = await member_by_email(db, email)
    assert member["region_id"] == (seeds.unit_id("region", region) if region else None)
    assert member["suggested_group_id"] == (group(nearest) if nearest else None)
    groups = await db.fetch("SELECT group_id FROM member_groups WHERE member_id = $1", member["id"])
    assert [r["group_id"] for r in groups] == ([group(nearest)] if nearest else [])


async def test_confirmation_link_confirms_once_and_publishes_member_confirmed(client, db, kafka, membership_settings):
    email = unique_email("confirm")
    await client.post("/join", data=join_form(email))
    member = await member_by_email(db, email)
    token = tokens.sign(membership_settings.secret_key, tokens.CONFIRM_EMAIL, {"m": member["id"]})

    opened = await client.get(f"/join/confirm?token={token}")  # a mail scanner following the link
    assert opened.status_code == 200 and 'action="/join/confirm"' in opened.text
    assert (await member_by_email(db, email))["status"] == "pending"
    first = await client.post("/join/confirm", data={"token": token})
    assert first.status_code == 200 and "confirmed" in first.text
    again = await client.post("/join/confirm", data={"token": token})
    assert again.status_code == 200

    row = await member_by_email(db, email)
    assert row["status"] == "confirmed" and row["confirmed_at"] is not None
    await kafka.wait_for(of_member(member["id"], "MemberConfirmed"))
    assert len(await kafka.settle(of_member(member["id"], "MemberConfirmed"), 1.5)) == 1


@pytest.mark.parametrize("kind", ["forged", "other-purpose", "expired", "garbage"])
async def test_forged_or_expired_confirmation_link_is_refused_and_changes_nothing(
    client, db, membership_settings, kind, monkeypatch
):
    email = unique_email("badlink")
    await client.post("/join", data=join_form(email))
    member = await member_by_email(db, email)
    secret = membership_settings.secret_key
    if kind == "forged":
        token = tokens.sign("not-the-secret-key-of-this-network", tokens.CONFIRM_EMAIL, {"m": member["id"]})
    elif kind == "other-purpose":
        token = tokens.sign(secret, "events-member", {"m": member["id"]})
    elif kind == "expired":
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: 1_000_000_000)  # signed in 2001
        token = tokens.sign(secret, tokens.CONFIRM_EMAIL, {"m": member["id"]})
        monkeypatch.undo()
    else:
        token = "not.a.token"
    outbox_before = await db.fetchval("SELECT count(*) FROM outbox")
    for response in (
        await client.get("/join/confirm", params={"token": token}),
        await client.post("/join/confirm", data={"token": token}),
    ):
        assert response.status_code == 400
        assert ("expired" if kind == "expired" else "not valid") in response.text
    assert (await member_by_email(db, email))["status"] == "pending"
    assert await db.fetchval("SELECT count(*) FROM outbox") == outbox_before


async def test_joining_again_updates_and_adds_choices_once_confirmed_without_a_second_join_event(
    client, db, kafka, membership_settings
):
    email = unique_email("again")
    await client.post("/join", data=join_form(email, interests=["racism-at-work"], groups=["coventry"]))
    member = await member_by_email(db, email)
    await kafka.wait_for(of_member(member["id"], "MemberJoined"))

    again = join_form(
        f"  {email.upper()} ",
        name="Olive E. Morris",
        postcode="CV32 5AA",
        interests=["racism-in-healthcare"],
        engagement_level="take_action",
        subteams=["research"],
    )
    assert (await client.post("/join", data=again)).status_code == 303
    assert (await member_by_email(db, email))["name"] == "Olive Morris"  # nothing changes until confirmed
    await confirm_join_change(client, db, membership_settings, member["id"])

    rows = await db.fetch("SELECT * FROM members WHERE email_normalised = $1", email)
    assert len(rows) == 1 and rows[0]["id"] == member["id"]
    row = rows[0]
    assert row["name"] == "Olive E. Morris" and row["postcode"] == "CV32 5AA"
    assert row["region_id"] == COVENTRY_WARWICKSHIRE and row["engagement_level"] == "take_action"
    assert row["interests"] == ["racism-at-work", "racism-in-healthcare"]  # added to, never taken away
    groups = await db.fetch("SELECT group_id FROM member_groups WHERE member_id = $1", member["id"])
    assert {r["group_id"] for r in groups} == {group("coventry"), group("warwick-leamington")}
    assert await db.fetchval("SELECT count(*) FROM consent_records WHERE member_id = $1", member["id"]) == 2

    [updated] = await kafka.wait_for(of_member(member["id"], "MemberProfileUpdated"))
    assert {"name", "postcode", "group_ids", "interests", "engagement_level", "subteam_ids"} <= set(
        updated.data["changed"]
    )
    [chosen] = await kafka.wait_for(of_member(member["id"], "EngagementLevelChosen"))
    assert chosen.data["level"] == "take_action" and chosen.data["previous_level"] == "informed"
    assert len(await kafka.settle(of_member(member["id"], "MemberJoined"), 1.0)) == 1


async def test_simultaneous_duplicate_joins_make_one_member_and_one_join_event(client, db, kafka):
    email = unique_email("race")
    forms = [join_form(email if i % 2 else email.upper(), name=f"Racer {i}") for i in range(5)]
    responses = await asyncio.gather(*(client.post("/join", data=f) for f in forms))
    assert [r.status_code for r in responses] == [303] * 5
    rows = await db.fetch("SELECT id FROM members WHERE email_normalised = $1", email)
    assert len(rows) == 1
    assert len(await kafka.wait_for(of_member(rows[0]["id"], "MemberJoined"))) == 1
    assert len(await kafka.settle(of_member(rows[0]["id"], "MemberJoined"), 1.5)) == 1
    assert len(kafka.envelopes(lambda e: e.type == "SubjectKeyIssued" and e.subject_id == rows[0]["id"])) == 1


async def test_honeypot_looks_like_success_and_stores_nothing(client, db):
    email = unique_email("bot")
    response = await client.post("/join", data=join_form(email, website="http://spam.example"))
    assert response.status_code == 303 and response.headers["location"] == "/join/thanks"
    assert await member_by_email(db, email) is None


async def test_too_many_joins_from_one_address_are_refused_without_storing(client, db):
    ip = "192.0.2.41"
    limit = await db.fetchval("SELECT max_count FROM rate_limits WHERE name = 'join-per-ip'")
    for _ in range(limit):
        await client.post("/join", data=join_form(unique_email("flood"), website="x"), headers={"X-Forwarded-For": ip})
    email = unique_email("flooded")
    refused = await client.post("/join", data=join_form(email), headers={"X-Forwarded-For": ip})
    assert refused.status_code == 429 and "Too many sign-ups" in refused.text
    assert await member_by_email(db, email) is None
    other = await client.post("/join", data=join_form(email), headers={"X-Forwarded-For": "192.0.2.42"})
    assert other.status_code == 303 and await member_by_email(db, email) is not None


async def test_too_many_joins_of_one_email_look_accepted_but_change_nothing(client, db, membership_settings):
    email = unique_email("bombed")
    limit = await db.fetchval("SELECT max_count FROM rate_limits WHERE name = 'join-per-email'")
    for i in range(limit):
        response = await client.post(
            "/join", data=join_form(email, name=f"Name {i}"), headers={"X-Forwarded-For": f"192.0.2.{100 + i}"}
        )
        assert response.status_code == 303
    over = await client.post("/join", data=join_form(email, name="Too Many"), headers={"X-Forwarded-For": "192.0.2.99"})
    assert over.status_code == 303 and over.headers["location"] == "/join/thanks"  # the same answer as ever
    row = await member_by_email(db, email)
    assert row["name"] == "Name 0"  # the others wait for the member to confirm them
    assert await db.fetchval("SELECT count(*) FROM consent_records WHERE member_id = $1", row["id"]) == 1
    await confirm_join_change(client, db, membership_settings, row["id"])
    row = await member_by_email(db, email)
    assert row["name"] == f"Name {limit - 1}"  # the last within the limit; the one over it replaced nothing
    assert await db.fetchval("SELECT count(*) FROM consent_records WHERE member_id = $1", row["id"]) == 2


async def test_the_answer_is_the_same_for_a_member_and_a_new_address(client):
    email = unique_email("probe")
    first = await client.post("/join", data=join_form(email))
    second = await client.post("/join", data=join_form(email))
    fresh = await client.post("/join", data=join_form(unique_email("probe")))
    assert {(r.status_code, r.headers["location"], r.text) for r in (first, second, fresh)} == {
        (303, "/join/thanks", "")
    }


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "correct format"),
        ({"email": ""}, "email", "Enter your email address"),
        ({"email_consent": ""}, "email_consent", "Tick the box"),
        ({"name": "N" * 121}, "name", "120 characters or fewer"),
        ({"skills": "s" * 1001}, "skills", "1000 characters or fewer"),
        ({"time_available": "t" * 201}, "time_available", "200 characters or fewer"),
        ({"organisation_name": "o" * 201}, "organisation_name", "200 characters or fewer"),
        ({"postcode": "NOT A CODE"}, "postcode", "real UK postcode"),
        ({"groups": ["atlantis"]}, "groups", "Choose local groups from the list"),
        ({"subteams": ["no-such-team"]}, "subteams", "Choose sub-teams from the list"),
        ({"interests": ["knitting"]}, "interests", "Choose the issues"),
        ({"engagement_level": "overlord"}, "engagement_level", "Choose how involved"),
        ({"region": "mars"}, "region", "region we do not know"),
        ({"organisation": "acme-ltd"}, "organisation", "Choose your organisation"),
        ({"consent_version": "email-1999"}, "email_consent", "consent statement we do not know"),
    ],
)
async def test_bad_input_rerenders_the_form_with_the_reason_and_stores_nothing(client, db, overrides, field, message):
    email = unique_email("bad")
    outbox_before = await db.fetchval("SELECT count(*) FROM outbox")
    form = {**join_form(email), **overrides}
    response = await client.post("/join", data=form)
    assert response.status_code == 422
    assert "There is a problem" in response.text and message in response.text
    assert f'href="#{field}"' in response.text
    if field != "email":
        assert f'value="{email}"' in response.text  # what the person typed is kept
    assert await db.fetchval("SELECT count(*) FROM members WHERE email_normalised = $1", email) == 0
    assert await db.fetchval("SELECT count(*) FROM outbox") == outbox_before
