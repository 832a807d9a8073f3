"""Members' rights through signed links: preferences, one-click unsubscribe (RFC 8058), leaving, a download of
everything held, and erasure reaching every service, with their sealed fields in Kafka no longer readable."""

from __future__ import annotations

import json

import asyncpg
import pytest
from cryptography.exceptions import InvalidTag

from deploy.local import launcher
from services.membership import seeds
from shared import tokens, topics
from shared.crypto import unseal
from shared.events.envelope import Envelope, Sealed
from tests.membership.conftest import (
    confirm_join_change,
    confirmed_request,
    join_form,
    make_organiser,
    member_by_email,
    of_member,
    poll,
    unique_email,
)
from tests.support.kafka import read_topic
from tests.support.tampering import tampered


async def joined(client, db, **overrides) -> dict:
    email = unique_email("rights")
    assert (await client.post("/join", data=join_form(email, **overrides))).status_code == 303
    return dict(await member_by_email(db, email))


def link(settings, purpose: str, member_id: str) -> str:
    return tokens.sign(settings.secret_key, purpose, {"m": member_id})


async def test_preferences_page_replaces_choices_and_announces_each_kind_of_change(
    client, db, kafka, membership_settings
):
    member = await joined(client, db, interests=["racism-at-work"], groups=["coventry", "nuneaton-bedworth"])
    token = link(membership_settings, tokens.PREFERENCES, member["id"])
    shown = await client.get("/preferences", params={"token": token})
    assert shown.status_code == 200 and member["email_normalised"] in shown.text

    saved = await client.post(
        "/preferences",
        data={
            "token": token,
            "email_consent": "yes",
            "email_topics": ["meetings"],
            "engagement_level": "organise",
            "interests": ["racism-in-policing"],
            "groups": ["coventry"],
            "subteams": ["research"],
        },
    )
    assert saved.status_code == 200 and "preferences are saved" in saved.text
    row = await member_by_email(db, member["email_normalised"])
    assert row["email_topics"] == ["meetings"] and row["engagement_level"] == "organise"
    assert row["interests"] == ["racism-in-policing"]
    groups = await db.fetch("SELECT group_id FROM member_groups WHERE member_id = $1", member["id"])
    assert [g["group_id"] for g in groups] == [seeds.unit_id("group", "coventry")]

    [consent] = await kafka.wait_for(of_member(member["id"], "ConsentChanged"))
    assert consent.data["granted"] is True and consent.data["topics"] == ["meetings"]
    assert consent.data["source"] == "preferences"
    [level] = await kafka.wait_for(of_member(member["id"], "EngagementLevelChosen"))
    assert level.data == {"member_id": member["id"], "level": "organise", "previous_level": "informed"}
    [profile] = await kafka.wait_for(of_member(member["id"], "MemberProfileUpdated"))
    assert set(profile.data["changed"]) == {"group_ids", "subteam_ids", "interests", "engagement_level"}
    assert profile.data["group_ids"] == [seeds.unit_id("group", "coventry")]


async def test_unknown_choices_on_the_preferences_page_change_nothing(client, db, membership_settings):
    member = await joined(client, db)
    token = link(membership_settings, tokens.PREFERENCES, member["id"])
    outbox_before = await db.fetchval("SELECT count(*) FROM outbox")
    for bad in ({"groups": ["atlantis"]}, {"email_topics": ["spam"]}, {"engagement_level": "overlord"}):
        form = {"token": token, "email_consent": "yes", "engagement_level": "informed", **bad}
        response = await client.post("/preferences", data=form)
        assert response.status_code == 422 and "There is a problem" in response.text
    assert await db.fetchval("SELECT count(*) FROM outbox") == outbox_before


@pytest.mark.parametrize("path", ["/preferences", "/unsubscribe", "/me/data", "/me/leave", "/me/erase"])
async def test_forged_expired_or_wrong_purpose_member_links_are_refused(client, db, membership_settings, path):
    member = await joined(client, db)
    for token in (
        tokens.sign("another-networks-secret-key-000", tokens.PREFERENCES, {"m": member["id"]}),
        tokens.sign(membership_settings.secret_key, tokens.CONFIRM_EMAIL, {"m": member["id"]}),
        tampered(link(membership_settings, tokens.PREFERENCES, member["id"])),
        "",
    ):
        response = await client.get(path, params={"token": token})
        assert response.status_code == 400 and "This link does not work" in response.text
    outbox_before = await db.fetchval("SELECT count(*) FROM outbox")
    forged = tokens.sign("another-networks-secret-key-000", tokens.UNSUBSCRIBE, {"m": member["id"]})
    assert (await client.post("/unsubscribe", params={"token": forged})).status_code == 400
    assert (await client.post("/me/erase", data={"token": forged, "confirm": "erase"})).status_code == 400
    row = await member_by_email(db, member["email_normalised"])
    assert row["email_consent"] and row["status"] == "pending"
    assert await db.fetchval("SELECT count(*) FROM outbox") == outbox_before


async def test_one_click_unsubscribe_withdraws_consent_once_and_get_changes_nothing(
    client, db, kafka, membership_settings
):
    member = await joined(client, db)
    token = link(membership_settings, tokens.UNSUBSCRIBE, member["id"])
    page = await client.get("/unsubscribe", params={"token": token})
    assert page.status_code == 200 and '<button type="submit">Unsubscribe</button>' in page.text
    assert (await member_by_email(db, member["email_normalised"]))["email_consent"] is True

    # What a mail client sends for List-Unsubscribe-Post (RFC 8058).
    one_click = await client.post("/unsubscribe", params={"token": token}, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "unsubscribed" in one_click.text
    again = await client.post("/unsubscribe", data={"token": token})
    assert again.status_code == 200
    assert (await member_by_email(db, member["email_normalised"]))["email_consent"] is False
    [withdrawn] = await kafka.wait_for(of_member(member["id"], "ConsentChanged"))
    assert withdrawn.data["granted"] is False and withdrawn.data["source"] == "one-click"
    assert len(await kafka.settle(of_member(member["id"], "ConsentChanged"), 1.0)) == 1
    record = await db.fetchrow(
        "SELECT granted, source FROM consent_records WHERE member_id = $1 ORDER BY recorded_at DESC LIMIT 1",
        member["id"],
    )
    assert record["granted"] is False and record["source"] == "one-click"


async def test_leaving_announces_member_left_and_stops_consent(client, db, kafka, membership_settings):
    member = await joined(client, db)
    token = link(membership_settings, tokens.PREFERENCES, member["id"])
    assert (await client.get("/me/leave", params={"token": token})).status_code == 200
    left = await client.post("/me/leave", data={"token": token, "reason": "Moving abroad"})
    assert left.status_code == 200 and "You have left" in left.text
    row = await member_by_email(db, member["email_normalised"])
    assert row["status"] == "left" and row["left_at"] is not None and row["email_consent"] is False
    [event] = await kafka.wait_for(of_member(member["id"], "MemberLeft"))
    # The reason is free text: sealed with the member's key, never in clear on a topic kept forever.
    assert event.data["reason"] is None and "Moving abroad" not in json.dumps(event.data)
    key = await db.fetchval("SELECT key FROM subject_keys WHERE key_id = $1", member["id"])
    assert unseal(Sealed(**event.data["sealed_reason"]), key) == "Moving abroad"


async def test_joining_again_after_leaving_announces_the_member_again_with_their_key(
    client, db, kafka, membership_settings
):
    member = await joined(client, db)
    token = link(membership_settings, tokens.PREFERENCES, member["id"])
    assert (await client.post("/me/leave", data={"token": token})).status_code == 200
    back = await client.post("/join", data=join_form(member["email_normalised"], name="Back Again"))
    assert back.status_code == 303
    assert (await member_by_email(db, member["email_normalised"]))["status"] == "left"  # until they confirm
    await confirm_join_change(client, db, membership_settings, member["id"])
    row = await member_by_email(db, member["email_normalised"])
    assert row["id"] == member["id"] and row["status"] != "left" and row["name"] == "Back Again"
    *_, again = await kafka.wait_for(of_member(member["id"], "MemberJoined"), count=2)
    key = await db.fetchval("SELECT key FROM subject_keys WHERE key_id = $1", member["id"])
    assert unseal(Sealed(**again.data["name"]), key) == "Back Again"
    assert unseal(Sealed(**again.data["email"]), key) == member["email_normalised"]
    assert again.data["confirmation_required"] is (row["status"] == "pending")


async def test_download_holds_everything_about_the_member_including_who_looked(client, db, membership_settings):
    member = await joined(client, db, skills="Sign language", groups=["derby"], subteams=["welcome"])
    _, headers = await make_organiser(db)
    await client.get(f"/members/{member['id']}", headers=headers)
    await client.post("/join", data=join_form(member["email_normalised"], name="Someone Else"))
    response = await confirmed_request(client, db, membership_settings, member["id"], "download")
    assert response.status_code == 200 and "We are gathering your data" in response.text
    # Every service answers with its part; then the link to the download is ready (and emailed).
    request_id = await poll(lambda: db.fetchval(
        "SELECT id FROM member_data_requests WHERE member_id = $1 AND ready_at IS NOT NULL", member["id"]), 60)
    token = tokens.sign(membership_settings.secret_key, tokens.MEMBER_DATA, {"r": request_id})
    response = await client.post("/me/download", data={"token": token})
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    everything = json.loads(response.text)
    assert everything["complete"] is True and everything["events"]["rsvps"] == []
    data = everything["membership"]
    assert data["member"]["email"] == member["email_normalised"] and data["member"]["skills"] == "Sign language"
    assert data["member"]["local_groups"] == ["Derby"] and data["member"]["subteams"] == ["Welcome team"]
    assert data["consent_records"][0]["wording_version"] == "email-2026-11"
    assert [w["what"] for w in data["waiting_for_you_to_confirm"]] == ["join-change"]
    assert any(
        v["what"] == "member.view" and v["who"].startswith("organiser:") for v in data["who_looked_at_your_record"]
    )


async def test_erasure_needs_a_ticked_box(client, db, membership_settings):
    member = await joined(client, db)
    token = link(membership_settings, tokens.PREFERENCES, member["id"])
    response = await client.post("/me/erase", data={"token": token})
    assert response.status_code == 422 and "Tick the box" in response.text
    assert (await member_by_email(db, member["email_normalised"]))["status"] == "pending"


async def _dsn(service: str) -> str:
    return launcher.database_url(service).replace("postgresql+asyncpg://", "postgresql://", 1)


async def every_key_held_anywhere() -> list[bytes]:
    """Every subject key in every database of the cluster: each service's own and its copies of others'."""
    base = (await _dsn("membership")).rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        names = [r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datallowconn")]
    finally:
        await conn.close()
    keys: list[bytes] = []
    for name in names:
        conn = await asyncpg.connect(f"{base}/{name}")
        try:
            holders = await conn.fetch(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND column_name = 'key' AND data_type = 'bytea'"
            )
            for holder in holders:
                rows = await conn.fetch(f'SELECT key FROM "{holder["table_name"]}" WHERE key IS NOT NULL')
                keys.extend(r["key"] for r in rows)
        finally:
            await conn.close()
    return keys


async def test_erasure_deletes_personal_data_everywhere_and_kafka_copies_no_longer_decrypt(
    system, client, db, kafka, membership_settings
):
    member = await joined(client, db, postcode="NG1 5FS", skills="Printing", groups=["nottingham"])
    member_id, email = member["id"], member["email_normalised"]
    notifications = await asyncpg.connect(await _dsn("notifications"))
    events = await asyncpg.connect(await _dsn("events"))
    try:
        # The other services learnt the member: notifications mirrors the address (and welcomes them).
        await poll(lambda: notifications.fetchval("SELECT email FROM recipients WHERE member_id = $1", member_id), 60)
        await poll(lambda: events.fetchval("SELECT 1 FROM members WHERE member_id = $1", member_id), 60)
        [joined_event] = kafka.envelopes(of_member(member_id, "MemberJoined"))
        sealed_email = Sealed(**joined_event.data["email"])
        assert unseal(sealed_email, await db.fetchval("SELECT key FROM subject_keys WHERE key_id = $1", member_id))

        erased = await confirmed_request(client, db, membership_settings, member_id, "erase")
        assert erased.status_code == 200 and "being erased" in erased.text

        row = await db.fetchrow("SELECT * FROM members WHERE id = $1", member_id)
        assert row["status"] == "erased" and row["email_normalised"] is None and row["name"] == ""
        assert row["postcode"] is None and row["skills"] is None and row["region_id"] is None
        for table in ("member_groups", "member_subteams", "consent_records", "role_grants"):
            assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE member_id = $1", member_id) == 0
        assert await db.fetchval("SELECT key FROM subject_keys WHERE key_id = $1", member_id) is None
        assert await member_by_email(db, email) is None

        await kafka.wait_for(of_member(member_id, "MemberErased"))
        await kafka.wait_for_tombstone(topics.MEMBERSHIP_SUBJECT_KEYS, member_id)
        # Every other service deletes its copies on MemberErased and the tombstone.
        await poll(
            lambda: notifications.fetchval("SELECT count(*) = 0 FROM recipients WHERE member_id = $1", member_id), 60
        )
        await poll(
            lambda: notifications.fetchval(
                "SELECT destroyed_at IS NOT NULL AND key IS NULL FROM subject_keys WHERE key_id = $1", member_id
            ),
            60,
        )
        await poll(lambda: events.fetchval("SELECT count(*) = 0 FROM members WHERE member_id = $1", member_id), 60)
        assert (
            await notifications.fetchval(
                "SELECT count(*) FROM deliveries WHERE recipient_id = $1 AND recipient_email IS NOT NULL", member_id
            )
            == 0
        )
    finally:
        await notifications.close()
        await events.close()

    # The member's sealed fields on Kafka: no key any service holds opens them.
    records = [r for r in await read_topic(topics.MEMBERSHIP_MEMBERS) if r.key == member_id.encode() and r.value]
    sealed = [
        Sealed(**value)
        for r in records
        for value in Envelope.from_bytes(r.value).data.values()
        if isinstance(value, dict) and "ciphertext" in value
    ]
    assert len(sealed) >= 3  # email, name, postcode
    keys = await every_key_held_anywhere()
    assert keys
    for field in sealed:
        for key in keys:
            with pytest.raises((InvalidTag, ValueError)):
                unseal(field, key)


async def _asks_and_outbox(db, member_id: str) -> tuple[object, int]:
    """The member's download request (each ask replaces it) and the confirmations announced for them."""
    request = await db.fetchval("SELECT id FROM member_requests WHERE member_id = $1 AND kind = 'download'", member_id)
    announced = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND event_type = 'MemberRightsConfirmationRequested'", member_id)
    return request, announced


async def test_a_forwarded_link_cannot_flood_its_owner_with_confirmations(client, db, membership_settings):
    """Each ask for a download or an erasure emails the member: five an hour per member, then a page that says so,
    and nothing recorded or sent (whichever connection asks)."""
    member = await joined(client, db)
    preferences = tokens.sign(membership_settings.secret_key, tokens.PREFERENCES, {"m": member["id"]})
    limit = await db.fetchval("SELECT max_count FROM rate_limits WHERE name = 'member-request-per-member'")
    for _ in range(limit):
        asked = await client.post("/me/data", data={"token": preferences})
        assert asked.status_code == 200 and "Check your email" in asked.text
    before = await _asks_and_outbox(db, member["id"])
    for path, form in (("/me/data", {}), ("/me/erase", {"confirm": "erase"})):
        refused = await client.post(
            path, data={"token": preferences, **form}, headers={"X-Forwarded-For": "192.0.2.61"})
        assert refused.status_code == 429 and "You have asked several times already" in refused.text
        assert "minute" in refused.text and int(refused.headers["retry-after"]) > 0
    assert await _asks_and_outbox(db, member["id"]) == before
    assert await db.fetchval(
        "SELECT count(*) FROM member_requests WHERE member_id = $1 AND kind = 'erase'", member["id"]) == 0


async def test_one_connection_cannot_ask_for_many_members_downloads(client, db, membership_settings):
    from services.membership.ratelimit import MEMBER_REQUEST_PER_IP, RateLimiter

    ip = "192.0.2.62"
    limit, window = await db.fetchrow(
        "SELECT max_count, window_s FROM rate_limits WHERE name = $1", MEMBER_REQUEST_PER_IP)
    bucket = RateLimiter(membership_settings.secret_key)._bucket(MEMBER_REQUEST_PER_IP, ip)
    await db.execute(
        "INSERT INTO rate_limit_hits (bucket, window_start, hits) "
        "VALUES ($1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), $3)",
        bucket, window, limit,
    )
    member = await joined(client, db)
    preferences = tokens.sign(membership_settings.secret_key, tokens.PREFERENCES, {"m": member["id"]})
    refused = await client.post("/me/data", data={"token": preferences}, headers={"X-Forwarded-For": ip})
    assert refused.status_code == 429
    assert await _asks_and_outbox(db, member["id"]) == (None, 0)
    allowed = await client.post("/me/data", data={"token": preferences}, headers={"X-Forwarded-For": "192.0.2.63"})
    assert allowed.status_code == 200 and "Check your email" in allowed.text
