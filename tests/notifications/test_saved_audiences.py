"""Saved audiences ("saved lists"), against the running system: an organiser saves the audience they built under a
name, chooses it by name in a later mailing, renames and changes it, deletes it after being asked; an organiser
outside its scope never sees it, cannot use, change or delete it, and nothing changes when they try."""

from __future__ import annotations

import uuid

from tests.notifications.test_mailings import BASE, add_member, add_place, people, region_organiser  # noqa: F401
from tests.support.organisers import organiser_headers

AUDIENCES = f"{BASE}/audiences"


async def saved_rows(db, name: str):
    return await db.fetch("SELECT id, name, scope_type, scope_id, audience FROM saved_audiences WHERE name = $1", name)


async def test_an_organiser_saves_an_audience_and_chooses_it_by_name_in_a_later_mailing(
    gateway,
    notifications_db,
    people,  # noqa: F811
):
    db, tag = notifications_db, uuid.uuid4().hex[:6]
    region = await add_place(db, people, "region", f"Saved region {tag}")
    group = await add_place(db, people, "group", f"Saved group {tag}", region)
    interest = f"housing-{tag}"
    await add_member(db, people, "Ada Saved", region=region, groups=(group,), interests=(interest,))
    await add_member(db, people, "Bo Saved", region=region, groups=(group,), interests=(interest,))
    await add_member(db, people, "Cy Elsewhere", region=region, interests=(interest,))
    headers, _ = await region_organiser(db, people, region)
    name = f"Housing group {tag}"

    saved = await gateway.post(BASE, headers=headers, data={
        "action": "save_audience", "audience_name": name, "unit": group, "interest": interest,
        "subject": "Not saved", "body": "Not yet"})  # fmt: skip
    assert saved.status_code == 200 and f"Saved the audience as “{name}”" in saved.text, saved.text
    [row] = await saved_rows(db, name)
    assert (row["scope_type"], row["scope_id"]) == ("region", region)
    assert await db.fetchval("SELECT count(*) FROM mailings WHERE subject = 'Not saved'") == 0
    # The same name again (in any case) is refused with the reason, and nothing more is saved.
    again = await gateway.post(BASE, headers=headers, data={
        "action": "save_audience", "audience_name": name.upper(), "subject": "", "body": ""})  # fmt: skip
    assert again.status_code == 422 and "You have an audience of this name already" in again.text
    assert await db.fetchval("SELECT count(*) FROM saved_audiences WHERE lower(name) = lower($1)", name) == 1

    # A later mailing: the saved audience is chosen by its name, and the page shows who it is and how many.
    new = await gateway.get(f"{BASE}/new", headers=headers)
    assert f'<option value="{row["id"]}">{name}</option>' in new.text
    used = await gateway.post(BASE, headers=headers, data={
        "action": "use_audience", "saved_audience": row["id"], "subject": "Later news", "body": "Hi"})  # fmt: skip
    assert used.status_code == 200, used.text
    assert f"Chose the saved audience “{name}”" in used.text and 'id="audience-count">2<' in used.text
    assert f'<option value="{group}" selected>' in used.text and f'<option value="{interest}" selected>' in used.text
    assert 'value="Later news"' in used.text

    # Renamed and widened to the whole region on its own page; listed by its new name, in words.
    renamed = f"Region housing {tag}"
    changed = await gateway.post(
        f"{AUDIENCES}/{row['id']}", headers=headers, data={"audience_name": renamed, "interest": interest}
    )
    assert changed.status_code == 303, changed.text
    listed = await gateway.get(AUDIENCES, headers=headers)
    assert renamed in listed.text and f"Interested in {interest}" in listed.text and name not in listed.text
    page = await gateway.get(f"{AUDIENCES}/{row['id']}", headers=headers)
    assert page.status_code == 200 and 'id="audience-count">3<' in page.text

    # Deleting asks first; then it is gone.
    asked = await gateway.get(f"{AUDIENCES}/{row['id']}/delete", headers=headers)
    assert asked.status_code == 200 and f"Delete the audience “{renamed}”?" in asked.text
    assert await db.fetchval("SELECT count(*) FROM saved_audiences WHERE id = $1", row["id"]) == 1
    deleted = await gateway.post(f"{AUDIENCES}/{row['id']}/delete", headers=headers)
    assert deleted.status_code == 303
    assert await db.fetchval("SELECT count(*) FROM saved_audiences WHERE id = $1", row["id"]) == 0
    assert (await gateway.get(f"{AUDIENCES}/{row['id']}", headers=headers)).status_code == 404


async def test_an_organiser_outside_the_scope_never_sees_uses_changes_or_deletes_a_saved_audience(
    gateway,
    notifications_db,
    people,  # noqa: F811
):
    db, tag = notifications_db, uuid.uuid4().hex[:6]
    region = await add_place(db, people, "region", f"Private region {tag}")
    group = await add_place(db, people, "group", f"Private group {tag}", region)
    headers, _ = await region_organiser(db, people, region)
    name = f"Private list {tag}"
    saved = await gateway.post(BASE, headers=headers, data={
        "action": "save_audience", "audience_name": name, "unit": group, "subject": "", "body": ""})  # fmt: skip
    assert saved.status_code == 200, saved.text
    [row] = await saved_rows(db, name)
    audience_id = row["id"]

    other_region, _ = await region_organiser(db, people, str(uuid.uuid4()))
    group_organiser = organiser_headers("group", group)  # under the region: not above it
    for stranger in (other_region, group_organiser):
        assert name not in (await gateway.get(AUDIENCES, headers=stranger)).text
        assert name not in (await gateway.get(f"{BASE}/new", headers=stranger)).text
        for path in ("", "/delete"):
            assert (await gateway.get(f"{AUDIENCES}/{audience_id}{path}", headers=stranger)).status_code == 404
        changed = await gateway.post(f"{AUDIENCES}/{audience_id}", headers=stranger, data={"audience_name": "Mine"})
        assert changed.status_code == 404
        assert (await gateway.post(f"{AUDIENCES}/{audience_id}/delete", headers=stranger)).status_code == 404
        used = await gateway.post(BASE, headers=stranger, data={
            "action": "use_audience", "saved_audience": audience_id, "subject": "", "body": ""})  # fmt: skip
        assert used.status_code == 422 and name not in used.text
    assert [dict(r) for r in await saved_rows(db, name)] == [dict(row)]

    # The network's organisers see it (the whole network is above every scope).
    assert name in (await gateway.get(AUDIENCES, headers=organiser_headers("network"))).text
    await db.execute("DELETE FROM saved_audiences WHERE id = $1", audience_id)
