"""Organisers' pages of notifications: digest choice, editable wording with a preview, the follow-up sequence,
and the delivery log of their scope."""

from __future__ import annotations

import html
import uuid
from zoneinfo import ZoneInfo

from tests.notifications.conftest import organiser_session, poll


async def _ready(db, organiser_id: str) -> bool:
    return bool(await db.fetchval("SELECT email IS NOT NULL FROM organisers WHERE organiser_id = $1", organiser_id))


async def test_pages_need_an_organiser_sign_in_and_answer_once_signed_in(client):
    assert (await client.get("/notifications/organise/digests")).status_code == 401
    forged = {"Authorization": "Bearer not-a-token"}
    assert (await client.get("/notifications/organise/deliveries", headers=forged)).status_code == 401
    signed_in = organiser_session(str(uuid.uuid4()))  # not mirrored yet: every page still answers
    for page in ("", "/digests", "/emails", "/follow-ups", "/follow-ups/new", "/deliveries?page=2"):
        response = await client.get(f"/notifications/organise{page}", headers=signed_in)
        assert response.status_code == 200, (page, response.text)
        assert '<main id="main"' in response.text
    cookie = {"gs_organiser": signed_in["Authorization"][7:]}  # membership's /signin set it, on the gateway's origin
    assert (await client.get("/notifications/organise", cookies=cookie)).status_code == 200


async def test_an_organiser_switches_to_daily_digests_and_reads_a_past_one(notifications_server, network, db, client):
    region = await network.unit("region", "Rutland")
    organiser_id, _ = await network.organiser("region", region)
    other_id, _ = await network.organiser("region", region)
    await network.meeting("Rutland water walk", "region", region)
    await poll(lambda: _ready(db, organiser_id))
    await poll(lambda: _ready(db, other_id))
    headers = organiser_session(organiser_id, "region", region)

    response = await client.post("/notifications/organise/digests/period", data={"period": "daily"}, headers=headers)
    assert response.status_code == 303
    assert await db.fetchval("SELECT digest_period FROM organisers WHERE organiser_id = $1", organiser_id) == "daily"
    next_at = await db.fetchval("SELECT next_digest_at FROM digest_subscriptions WHERE organiser_id = $1", organiser_id)
    assert next_at.astimezone(ZoneInfo("Europe/London")).hour == 7
    page = await client.get("/notifications/organise/digests", headers=headers)
    assert 'value="daily" checked' in page.text and f"Rutland {network.tag}" in page.text
    bad = await client.post("/notifications/organise/digests/period", data={"period": "hourly"}, headers=headers)
    assert bad.status_code == 422

    await poll(lambda: db.fetchval("SELECT count(*) FROM activity WHERE detail->>'title' LIKE $1", "Rutland water%"))
    assert await notifications_server.digests.run_now(organiser_id=organiser_id) == 1
    digest_id = await db.fetchval("SELECT id FROM digests WHERE organiser_id = $1", organiser_id)
    mine = await client.get(f"/notifications/organise/digests/{digest_id}", headers=headers)
    assert mine.status_code == 200 and "your daily digest" in mine.text
    theirs = await client.get(
        f"/notifications/organise/digests/{digest_id}", headers=organiser_session(other_id, "region", region)
    )
    assert theirs.status_code == 404


async def test_wording_is_previewed_without_saving_and_saved_only_by_network_organisers(client):
    network_organiser = organiser_session(str(uuid.uuid4()))
    region_organiser = organiser_session(str(uuid.uuid4()), "region", str(uuid.uuid4()))
    before = await client.get("/notifications/organise/emails", headers=network_organiser)
    assert before.status_code == 200
    name = f"Preview Network {uuid.uuid4().hex[:6]}"
    form = {
        "network_name": name,
        "sender_name": "The organising team",
        "sign_off": "In solidarity,\n{network_name}",
        "digest_intro": "News from {scope_name} & around.",
    }

    preview = await client.post(
        "/notifications/organise/emails", data={**form, "action": "preview"}, headers=region_organiser
    )
    assert preview.status_code == 200
    shown = html.unescape(preview.text)
    assert "In solidarity," in shown and "Dear Alex," in shown and "News from" in shown
    assert name in shown and "Follow-up: meet-your-group" in shown
    assert name not in (await client.get("/notifications/organise/emails", headers=network_organiser)).text

    refused = await client.post(
        "/notifications/organise/emails", data={**form, "action": "save"}, headers=region_organiser
    )
    assert refused.status_code == 403
    missing = await client.post(
        "/notifications/organise/emails", data={**form, "network_name": "", "action": "save"}, headers=network_organiser
    )
    assert missing.status_code == 422 and "There is a problem" in missing.text

    original = {k: _field(before.text, k) for k in form}
    try:
        saved = await client.post(
            "/notifications/organise/emails", data={**form, "action": "save"}, headers=network_organiser
        )
        assert saved.status_code == 303
        assert name in (await client.get("/notifications/organise/emails", headers=network_organiser)).text
    finally:
        await client.post(
            "/notifications/organise/emails", data={**original, "action": "save"}, headers=network_organiser
        )


def _field(page: str, name: str) -> str:
    """The value of an input or textarea on a page (good enough for our own forms)."""
    marker = f'name="{name}" value="'
    if marker in page:
        return html.unescape(page.split(marker, 1)[1].split('"', 1)[0])
    after = page.split(f'name="{name}"', 1)[1]
    return html.unescape(after.split(">", 1)[1].split("</textarea>", 1)[0])


async def test_follow_up_steps_are_edited_with_a_preview(client, db):
    network_organiser = organiser_session(str(uuid.uuid4()))
    listing = await client.get("/notifications/organise/follow-ups", headers=network_organiser)
    assert listing.status_code == 200 and "meet-your-group" in listing.text and "first-ask" in listing.text

    step_key = f"check-in-{uuid.uuid4().hex[:6]}"
    form = {
        "new": "1",
        "step_key": step_key,
        "day_offset": "30",
        "position": "0",
        "subject": "A month with {network_name}, {first_name}",
        "body": "How is it going?\n\nReply to this email and tell us.",
        "cta_label": "",
        "cta_url": "",
        # "enabled" left unticked: members who join now do not get this step
    }
    preview = await client.post(
        "/notifications/organise/follow-ups", data={**form, "action": "preview"}, headers=network_organiser
    )
    assert preview.status_code == 200
    assert "A month with Midlands Test Network, Sam" in html.unescape(preview.text)
    assert await db.fetchval("SELECT count(*) FROM follow_up_steps WHERE step_key = $1", step_key) == 0

    invalid = await client.post(
        "/notifications/organise/follow-ups",
        data={**form, "day_offset": "soon", "action": "save"},
        headers=network_organiser,
    )
    assert invalid.status_code == 422 and "Enter a whole number" in invalid.text
    region_organiser = organiser_session(str(uuid.uuid4()), "region", str(uuid.uuid4()))
    refused = await client.post(
        "/notifications/organise/follow-ups", data={**form, "action": "save"}, headers=region_organiser
    )
    assert refused.status_code == 403

    saved = await client.post(
        "/notifications/organise/follow-ups", data={**form, "action": "save"}, headers=network_organiser
    )
    assert saved.status_code == 303
    row = await db.fetchrow("SELECT * FROM follow_up_steps WHERE step_key = $1", step_key)
    assert row["day_offset"] == 30 and row["enabled"] is False
    edit = await client.get(f"/notifications/organise/follow-ups/{step_key}", headers=network_organiser)
    assert edit.status_code == 200 and "How is it going?" in edit.text
    again = await client.post(
        "/notifications/organise/follow-ups", data={**form, "action": "save"}, headers=network_organiser
    )
    assert again.status_code == 409


async def test_the_delivery_log_shows_only_the_organisers_scope(notifications_server, network, db, client):
    north = await network.unit("region", "North Staffs")
    south = await network.unit("region", "South Staffs")
    stoke = await network.unit("group", "Stoke", north)
    north_member, north_email = await network.member(region_id=None, group_id=stoke, name="Nora North")
    south_member, south_email = await network.member(region_id=south, group_id=None, name="Sid South")
    for member in (north_member, south_member):
        await poll(lambda m=member: db.fetchval("SELECT count(*) FROM deliveries WHERE recipient_id = $1", m))
    await poll(lambda: db.fetchval("SELECT count(*) FROM units WHERE unit_id = $1", stoke))

    north_page = await client.get(
        "/notifications/organise/deliveries", headers=organiser_session("o1", "region", north)
    )
    assert north_page.status_code == 200
    assert north_email in north_page.text and south_email not in north_page.text
    group_page = await client.get("/notifications/organise/deliveries", headers=organiser_session("o2", "group", stoke))
    assert north_email in group_page.text and south_email not in group_page.text

    async def summary_counts_the_groups_deliveries_by_status() -> bool:
        """The last week's summary says what the group's one member was sent (statuses move as emails go)."""
        page = await client.get("/notifications/organise/deliveries", headers=organiser_session("o2", "group", stoke))
        rows = await db.fetch("SELECT status, count(*) AS n FROM deliveries WHERE recipient_id = $1 "
                              "GROUP BY status ORDER BY status", north_member)
        said = ", ".join(f"{r['n']} {r['status']}" for r in rows)
        return f"Last 7 days: {said}." in page.text

    await poll(summary_counts_the_groups_deliveries_by_status)
    everyone = await client.get(
        "/notifications/organise/deliveries", params={"kind": "welcome"}, headers=organiser_session("o3")
    )
    assert north_email in everyone.text and south_email in everyone.text
    nothing = await client.get(
        "/notifications/organise/deliveries",
        params={"kind": "digest"},
        headers=organiser_session("o4", "region", south),
    )
    assert south_email not in nothing.text
