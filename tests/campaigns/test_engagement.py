"""The engagement ladder: levels from actions and attendance, published as EngagementLevelChanged; configurable
rules; actions taken before joining; the long tail of members who never took part."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.campaigns.views import member_token
from shared.crypto import encode_key, new_key
from shared.events.catalog import AttendanceRecorded, RoleGranted, SubjectKeyIssued
from tests.campaigns.conftest import (
    PETITION,
    PLEDGE,
    SECRET,
    SHARE,
    ask_of,
    ask_path,
    joined,
    launch,
    of_type,
    organiser_headers,
    organiser_token,
    poll,
    publish,
    unit,
)


async def member_row(db, member_id: str):
    return await db.fetchrow("SELECT * FROM members WHERE member_id = $1", member_id)


async def act_as_member(client, campaign, member_id: str, kinds=("petition", "pledge", "share")) -> None:
    token = member_token(SECRET, member_id)
    for kind in kinds:
        if kind == "share":
            r = await client.post(ask_path(campaign, kind) + "/share", data={"channel": "email", "member": token})
        else:
            r = await client.post(ask_path(campaign, kind), data={"member": token, "pledge_text": "I pledge"})
        assert r.status_code == 303, r.text


async def attended(member_id: str, n: int = 1) -> None:
    await publish(*(AttendanceRecorded(meeting_id=str(uuid.uuid4()), rsvp_id=str(uuid.uuid4()), member_id=member_id,
                                       method="organiser", attended_at=datetime.now(UTC)) for _ in range(n)))


async def test_a_member_climbs_the_ladder_with_actions_and_attendance(client, organiser, kafka, db):
    member_id = str(uuid.uuid4())
    await publish(joined(member_id, "region-engage"))
    row = await poll(lambda: member_row(db, member_id))
    assert row["level"] == "supporter" and row["actions"] == 0
    campaign = await launch(client, organiser)
    await act_as_member(client, campaign, member_id, kinds=("petition",))
    first = (await kafka.wait_for(of_type("EngagementLevelChanged", member_id=member_id), ours=db))[0]
    assert first.data["level"] == "participant" and first.data["previous_level"] == "supporter"
    assert first.data["reason"] == "1 action, 0 meetings attended"
    assert first.subject_id == member_id
    await act_as_member(client, campaign, member_id, kinds=("pledge", "share"))
    await attended(member_id)
    second = (await kafka.wait_for(of_type("EngagementLevelChanged", member_id=member_id), count=2, ours=db))[1]
    assert (second.data["previous_level"], second.data["level"]) == ("participant", "activist")
    row = await poll(lambda: _level(db, member_id, "activist"))
    assert (row["actions"], row["attended"]) == (3, 1)
    # The same attendance delivered again counts once; no change, no event.
    await publish(AttendanceRecorded(meeting_id="m", rsvp_id=f"again-{member_id}", member_id=member_id,
                                     method="organiser", attended_at=datetime.now(UTC)))
    await poll(lambda: _attended(db, member_id, 2))
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'EngagementLevelChanged' "
                             "AND key = $1", member_id) == 2
    level = await client.get(f"/campaigns/api/engagement/members/{member_id}", headers=organiser)
    assert level.json()["level"] == "activist"


async def _level(db, member_id: str, level: str):
    row = await member_row(db, member_id)
    return row if row is not None and row["level"] == level else None


async def _attended(db, member_id: str, n: int) -> bool:
    row = await member_row(db, member_id)
    return row is not None and row["attended"] == n


async def test_an_organiser_role_puts_a_member_at_the_top(client, kafka, db):
    member_id = str(uuid.uuid4())
    await publish(joined(member_id, "region-engage"))
    await poll(lambda: member_row(db, member_id))
    await publish(RoleGranted(organiser_id=str(uuid.uuid4()), member_id=member_id, role="organiser",
                              scope_type="region", scope_id="region-engage"))
    changed = (await kafka.wait_for(of_type("EngagementLevelChanged", member_id=member_id), ours=db))[0]
    assert changed.data["level"] == "organiser" and changed.data["reason"] == "became organiser"


async def test_an_action_taken_before_joining_counts_once_the_person_joins(client, organiser, kafka, db):
    campaign = await launch(client, organiser, asks=[PETITION])
    email = f"later-{uuid.uuid4().hex[:8]}@example.org"
    # Not ticking "join" here, so membership (which joins people who tick it) cannot race this test's own join.
    await client.post(ask_path(campaign, "petition"), data={"name": "Later Member", "email": email})
    action = (await kafka.wait_for(of_type("ActionTaken", ask_id=ask_of(campaign, "petition")["id"])))[0]
    await poll(lambda: db.fetchval("SELECT 1 FROM engagement_facts WHERE fact_id = $1", action.data["action_id"]))
    member_id = str(uuid.uuid4())
    await publish(joined(member_id, "region-engage", source=f"action:{action.data['action_id']}"))
    changed = (await kafka.wait_for(of_type("EngagementLevelChanged", member_id=member_id), ours=db))[0]
    assert (changed.data["previous_level"], changed.data["level"]) == (None, "participant")
    assert await db.fetchval("SELECT member_id FROM actions WHERE id = $1", action.data["action_id"]) == member_id


async def test_the_ladder_is_configurable_and_levels_are_recomputed(client, organiser, kafka, db):
    member_id = str(uuid.uuid4())
    await publish(joined(member_id, "region-engage"))
    await poll(lambda: member_row(db, member_id))
    campaign = await launch(client, organiser, asks=[PETITION, PLEDGE, SHARE])
    await act_as_member(client, campaign, member_id, kinds=("petition", "pledge"))
    await poll(lambda: _level(db, member_id, "participant"))
    before = (await client.get("/campaigns/api/engagement/ladder", headers=organiser)).json()["levels"]
    ladder = [{"level": "supporter", "label": "Supporter"},
              {"level": "participant", "label": "Participant", "min_total": 1},
              {"level": "campaigner", "label": "Campaigner", "min_actions": 2},
              {"level": "organiser", "label": "Organiser", "min_actions": 10, "roles": ["organiser"]}]
    refused = await client.put("/campaigns/api/engagement/ladder", headers=organiser_headers("region", "r"),
                               json={"levels": ladder})
    assert refused.status_code == 403
    bad = await client.put("/campaigns/api/engagement/ladder", headers=organiser,
                           json={"levels": [{"level": "one", "min_actions": 3}, {"level": "one"}]})
    assert bad.status_code == 422
    try:
        saved = await client.put("/campaigns/api/engagement/ladder", headers=organiser, json={"levels": ladder})
        assert saved.status_code == 200 and saved.json()["members_changed"] >= 1
        changed = await kafka.wait_for(of_type("EngagementLevelChanged", member_id=member_id, level="campaigner"),
                                       ours=db)
        assert changed[0].data["previous_level"] == "participant"
        assert changed[0].data["reason"] == "the ladder changed"
    finally:
        await client.put("/campaigns/api/engagement/ladder", headers=organiser, json={"levels": before})
    await poll(lambda: _level(db, member_id, "participant"))


async def test_a_network_organiser_edits_a_ladder_rule_on_its_page_and_confirms_who_moves(client, organiser, kafka,
                                                                                          db):
    member_id = str(uuid.uuid4())
    await publish(joined(member_id, "region-engage"))
    await poll(lambda: member_row(db, member_id))
    campaign = await launch(client, organiser, asks=[PETITION, PLEDGE, SHARE])
    await act_as_member(client, campaign, member_id, kinds=("petition",))
    await poll(lambda: _level(db, member_id, "participant"))
    before = (await client.get("/campaigns/api/engagement/ladder", headers=organiser)).json()["levels"]
    page = await client.get("/campaigns/organise/ladder", cookies={"gs_organiser": organiser_token("network")})
    assert 'id="min_total-1"' in page.text and "Actions and meetings together, at least" in page.text
    form = {"levels": "5"}
    for i, r in enumerate(before):
        form.update({f"level-{i}": r["level"], f"label-{i}": r["label"], f"min_actions-{i}": str(r["min_actions"]),
                     f"min_attended-{i}": str(r["min_attended"]), f"min_total-{i}": str(r["min_total"]),
                     f"roles-{i}": ", ".join(r["roles"])})
    form["min_total-1"] = "2"  # a participant now needs two actions or meetings: this member goes back down
    regional = await client.post("/campaigns/organise/ladder", data=form,
                                 cookies={"gs_organiser": organiser_token("region", "region-engage")})
    assert regional.status_code == 403
    network = {"gs_organiser": organiser_token("network")}
    bad = await client.post("/campaigns/organise/ladder", data={**form, "label-1": before[0]["label"],
                                                                "level-1": before[0]["level"]}, cookies=network)
    assert bad.status_code == 422 and "Each level must have its own name" in bad.text
    asked = await client.post("/campaigns/organise/ladder", data=form, cookies=network)
    assert asked.status_code == 200 and "Yes, change the ladder" in asked.text and "change level" in asked.text
    assert (await client.get("/campaigns/api/engagement/ladder", headers=organiser)).json()["levels"] == before
    try:
        saved = await client.post("/campaigns/organise/ladder", data={**form, "confirm": "yes"}, cookies=network)
        assert saved.status_code == 200 and "The ladder is saved" in saved.text
        moved = await kafka.wait_for(of_type("EngagementLevelChanged", member_id=member_id, level="supporter"),
                                     ours=db)
        assert moved[0].data["previous_level"] == "participant"
    finally:
        await client.put("/campaigns/api/engagement/ladder", headers=organiser, json={"levels": before})
    await poll(lambda: _level(db, member_id, "participant"))


async def _named(client, headers, member_id: str) -> tuple[str, str] | None:
    tail = (await client.get("/campaigns/api/engagement/long-tail", headers=headers)).json()
    found = [(m["name"], m["email"]) for m in tail["members"] if m["member_id"] == member_id and m["email"]]
    return found[0] if found else None


async def test_the_long_tail_shows_members_who_never_took_part_by_region_and_group(client, organiser, kafka, db):
    region, other_region = unit("region", "Tail region"), unit("region", "Other tail region")
    group = unit("group", "Tail group", region.unit_id)
    await publish(region, other_region, group)
    quiet = [str(uuid.uuid4()) for _ in range(3)]
    active = str(uuid.uuid4())
    elsewhere = str(uuid.uuid4())
    key = new_key()  # the first quiet member's key reaches campaigns: their name and address can be read
    await publish(SubjectKeyIssued(key_id=quiet[0], key=encode_key(key)),
                  joined(quiet[0], region.unit_id, [group.unit_id], key=key, name="Quiet One"),
                  *(joined(m, region.unit_id, [group.unit_id]) for m in quiet[1:]),
                  joined(active, region.unit_id, [group.unit_id]), joined(elsewhere, other_region.unit_id))
    await poll(lambda: member_row(db, elsewhere))
    campaign = await launch(client, organiser, asks=[PETITION])
    await act_as_member(client, campaign, active, kinds=("petition",))
    await poll(lambda: _level(db, active, "participant"))

    mine = organiser_headers("region", region.unit_id)
    tail = (await client.get("/campaigns/api/engagement/long-tail", headers=mine)).json()
    assert {m["member_id"] for m in tail["members"]} == set(quiet) and tail["total"] == 3
    assert tail["by_place"] == [{"region_id": region.unit_id, "region": "Tail region", "group_id": group.unit_id,
                                 "group": "Tail group", "members": 3}]
    by_group = (await client.get("/campaigns/api/engagement/long-tail", headers=organiser,
                                 params={"group": group.unit_id})).json()
    assert {m["member_id"] for m in by_group["members"]} == set(quiet)
    theirs = (await client.get("/campaigns/api/engagement/long-tail",
                               headers=organiser_headers("region", other_region.unit_id))).json()
    assert {m["member_id"] for m in theirs["members"]} == {elsewhere}
    page = await client.get("/campaigns/organise/long-tail", headers=mine)
    assert page.status_code == 200 and "3 members" in page.text and f"/members/{quiet[0]}" in page.text
    csv_text = (await client.get("/campaigns/organise/long-tail.csv", headers=mine)).text
    assert csv_text.splitlines()[0] == "name,email,region,groups,joined_at,member_id"
    assert len(csv_text.splitlines()) == 4
    named = await poll(lambda: _named(client, mine, quiet[0]))
    assert named == ("Quiet One", f"{quiet[0]}@example.org")
    page = await client.get("/campaigns/organise/long-tail", headers=mine)
    assert "Quiet One" in page.text and f"mailto:{quiet[0]}@example.org" in page.text
    other = await client.get(f"/campaigns/api/engagement/members/{quiet[0]}",
                             headers=organiser_headers("region", other_region.unit_id))
    assert other.status_code == 403
