"""Follow-ups after joining: due on their day, skipped for members who took part, never to an address that
must not be emailed, each sent once."""

from __future__ import annotations

import uuid
from datetime import timedelta

from shared.events.catalog import ConsentChanged, MemberLeft
from tests.notifications.conftest import now, poll


async def _follow_ups_of(db, member_id: str) -> dict[str, tuple[str, str | None]]:
    rows = await db.fetch("SELECT step_key, status, reason FROM follow_ups WHERE member_id = $1", member_id)
    return {r["step_key"]: (r["status"], r["reason"]) for r in rows}


async def _recipient(db, member_id: str):
    return await db.fetchrow("SELECT * FROM recipients WHERE member_id = $1", member_id)


async def test_follow_ups_go_on_their_day_and_skip_members_who_took_part_or_opted_out(
    notifications_server, network, publisher, db, catcher
):
    region = await network.unit("region", "Shropshire")
    group = await network.unit("group", "Shrewsbury", region)
    meeting_id = await network.meeting("Shrewsbury welcome evening", "group", group)
    four_days_ago = now() - timedelta(days=4)
    newcomer, newcomer_email = await network.member(
        region_id=region, group_id=group, joined_at=four_days_ago, name="Robin Newcomer"
    )
    active, active_email = await network.member(region_id=region, group_id=group, joined_at=four_days_ago)
    unsubscribed, unsubscribed_email = await network.member(region_id=region, group_id=group, joined_at=four_days_ago)
    gone, gone_email = await network.member(region_id=region, group_id=group, joined_at=four_days_ago)
    campaign = await network.campaign("Clean Rivers")
    await network.action(campaign, region_id=region, group_id=group, member_id=active)  # took part
    await publisher.publish(ConsentChanged(member_id=unsubscribed, granted=False, source="unsubscribe-link"))
    await publisher.publish(MemberLeft(member_id=gone, reason="moved away"))

    for member in (newcomer, active, unsubscribed, gone):
        await poll(lambda m=member: _two_steps_scheduled(db, m))
    await poll(lambda: db.fetchval("SELECT count(*) FROM participation WHERE member_id = $1", active))
    await poll(lambda: _recipient_is(db, unsubscribed, "email_consent", False))
    await poll(lambda: _recipient_is(db, gone, "status", "left"))
    await poll(lambda: db.fetchval("SELECT count(*) FROM activity WHERE subject_id = $1", meeting_id))
    steps = await _follow_ups_of(db, newcomer)
    assert steps == {"meet-your-group": ("due", None), "first-ask": ("due", None)}
    due = await db.fetchval("SELECT due_at FROM follow_ups WHERE member_id = $1 AND step_key = 'first-ask'", newcomer)
    assert abs((due - (four_days_ago + timedelta(days=14))).total_seconds()) < 1

    follow_ups = notifications_server.follow_ups
    await follow_ups.run_due()
    assert await _follow_ups_of(db, newcomer) == {"meet-your-group": ("queued", None), "first-ask": ("due", None)}
    assert (await _follow_ups_of(db, active))["meet-your-group"] == ("skipped", "already took part")
    assert (await _follow_ups_of(db, unsubscribed))["meet-your-group"] == ("skipped", "no consent to email")
    assert (await _follow_ups_of(db, gone))["meet-your-group"] == ("skipped", "member left")

    intro = await _wait_for_subject(catcher, newcomer_email, "Meet the people near you, Robin")
    assert f"Shrewsbury {network.tag} gets together regularly" in intro["text"]
    assert f"Shrewsbury welcome evening {network.tag}" in intro["text"]  # the next meetings near them
    assert f"/events?group={group}" in intro["text"]
    assert intro["headers"]["List-Unsubscribe"].startswith("<http") and "unsubscribe?token=" in intro["text"]
    assert intro["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # Time moves on: the day-14 step falls due.
    await db.execute(
        "UPDATE follow_ups SET due_at = now() - interval '1 minute' WHERE member_id = ANY($1::text[]) "
        "AND step_key = 'first-ask'",
        [newcomer, active, unsubscribed],
    )
    await follow_ups.run_due()
    await follow_ups.run_due()  # a second pass (or a second instance) sends nothing more
    assert (await _follow_ups_of(db, newcomer))["first-ask"] == ("queued", None)
    ask = await _wait_for_subject(catcher, newcomer_email, "One thing you can do this week, Robin")
    assert "Take an action:" in ask["text"] and "/campaigns" in ask["text"]

    await catcher.settle(newcomer_email, 1.5)
    # Exactly two from this deployment. The launcher's own notifications service sees the same events on the
    # shared Kafka and may send its own copy when its minute loop runs, so count this deployment's deliveries.
    sent = "SELECT count(*) FROM deliveries WHERE recipient_id = $1 AND kind = 'follow_up'"
    assert await db.fetchval(sent, newcomer) == 2
    arrived = {m["subject"].split(",")[0] for m in await catcher.messages(newcomer_email) if _is_follow_up(m)}
    assert arrived == {"Meet the people near you", "One thing you can do this week"}
    for address in (active_email, unsubscribed_email, gone_email):
        assert [m for m in await catcher.messages(address) if _is_follow_up(m)] == []


def _is_follow_up(message: dict) -> bool:
    return message["subject"].startswith(("Meet the people near you", "One thing you can do this week"))


async def _two_steps_scheduled(db, member_id: str) -> bool:
    return await db.fetchval("SELECT count(*) FROM follow_ups WHERE member_id = $1", member_id) == 2


async def _recipient_is(db, member_id: str, column: str, value: object) -> bool:
    row = await _recipient(db, member_id)
    return row is not None and row[column] == value


async def _wait_for_subject(catcher, to: str, subject: str, timeout: float = 30.0) -> dict:
    async def found() -> dict | None:
        return next((m for m in await catcher.messages(to) if m["subject"] == subject), None)

    return await poll(found, timeout=timeout)


async def test_a_member_not_yet_confirmed_waits_and_a_suppressed_address_is_never_followed_up(
    notifications_server, network, publisher, db, catcher
):
    from shared.events.catalog import MemberJoined

    region = await network.unit("region", "Herefordshire")
    member_id = str(uuid.uuid4())
    email = f"pending-{member_id[:8]}@example.org"
    await publisher.issue_key(member_id)
    await network.key_arrived(member_id)
    await publisher.publish(
        MemberJoined(
            member_id=member_id,
            email=publisher.seal(member_id, email),
            name=publisher.seal(member_id, "Pat Pending"),
            region_id=region,
            engagement_level="supporter",
            email_consent=True,
            consent_wording_version="v1",
            source="test",
            confirmation_required=True,
            joined_at=now() - timedelta(days=4),
        )
    )
    await poll(lambda: _recipient_is(db, member_id, "status", "pending"))
    await poll(lambda: _two_steps_scheduled(db, member_id))
    follow_ups = notifications_server.follow_ups
    await follow_ups.run_due()
    assert (await _follow_ups_of(db, member_id))["meet-your-group"] == ("due", "waiting for confirmation")

    # Confirmed later, but the address has since been suppressed (hard bounces): still nothing is sent.
    await db.execute("UPDATE recipients SET status = 'confirmed' WHERE member_id = $1", member_id)
    async with notifications_server.digests.uows.begin() as uow:
        await notifications_server.app.state.notifications.suppressions.suppress(uow.session, email, "hard_bounces")
    await follow_ups.run_due(now() + timedelta(hours=7))  # past the re-check interval
    assert (await _follow_ups_of(db, member_id))["meet-your-group"] == ("skipped", "address suppressed")
    await catcher.settle(email, 1.0)
    assert [m for m in await catcher.messages(email) if "Meet the people" in m["subject"]] == []
