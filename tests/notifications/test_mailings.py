"""Mailings organisers write, against the running system: the audience is exactly the people chosen (not the
unsubscribed, not another region, not the suppressed), the live count is who gets it, a test goes only to its
writer, clicks are counted (how many, never who) and redirect, the report adds up, and a mailing interrupted by a
killed service sends one email to each person after the restart."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest

from deploy.local import launcher
from services.notifications.mailings_web import NETWORK_TZ
from services.notifications.suppression import Suppressions
from shared.auth import verify
from tests.notifications.test_announcements import Tally
from tests.support.organisers import organiser_headers

BASE = "/notifications/organise/mailings"


@pytest.fixture
async def people(notifications_db):
    """Members the test puts in the mirror, and organisers, removed afterwards (a reused stack stays small)."""
    made: dict[str, list[str]] = {"members": [], "organisers": [], "keys": [], "units": []}
    yield made
    await notifications_db.execute("DELETE FROM participation WHERE member_id = ANY($1::text[])", made["members"])
    await notifications_db.execute("DELETE FROM units WHERE unit_id = ANY($1::text[])", made["units"])
    await notifications_db.execute("DELETE FROM recipients WHERE member_id = ANY($1::text[])", made["members"])
    await notifications_db.execute("DELETE FROM organisers WHERE organiser_id = ANY($1::text[])", made["organisers"])
    await notifications_db.execute("DELETE FROM suppressions WHERE email = ANY($1::text[])", made["keys"])


async def add_members(conn, made, n: int, *, region: str, interests: list[str], tag: str, consent: bool = True):
    """Confirmed members of `region` with `interests`, as the mirror holds them once membership's events arrived."""
    rows = [
        (str(uuid.uuid4()), f"{tag}-{i}-{uuid.uuid4().hex[:8]}@example.org", f"{tag.title()} {i}") for i in range(n)
    ]
    keys = Suppressions(launcher.secret_key())
    await conn.executemany(
        "INSERT INTO recipients (member_id, email, name, email_consent, status, region_id, interests, address_key, "
        "updated_at) VALUES ($1, $2, $3, $4, 'confirmed', $5, $6, $7, now())",
        [(mid, email, name, consent, region, interests, keys.address_key(email)) for mid, email, name in rows],
    )
    await conn.executemany(
        "INSERT INTO subject_keys (key_id, key) VALUES ($1, $2)", [(mid, os.urandom(32)) for mid, _, _ in rows]
    )
    made["members"].extend(mid for mid, _, _ in rows)
    return rows


async def region_organiser(conn, made, region: str) -> tuple[dict[str, str], str]:
    """An organiser of `region` (a session's header) whose address notifications holds, as RoleGranted leaves it."""
    headers = organiser_headers("region", region)
    organiser_id = launcher_organiser_id(headers)
    email = f"writer-{uuid.uuid4().hex[:8]}@example.org"
    await conn.execute(
        "INSERT INTO organisers (organiser_id, member_id, email, name, feed_token) VALUES ($1, $1, $2, $3, $4)",
        organiser_id,
        email,
        "Rosa Writer",
        uuid.uuid4().hex,
    )
    made["organisers"].append(organiser_id)
    return headers, email


def launcher_organiser_id(headers: dict[str, str]) -> str:
    return verify(launcher.secret_key(), headers["Authorization"].removeprefix("Bearer ")).organiser_id


async def create(gateway, headers, data) -> str:
    made = await gateway.post(BASE, headers=headers, data={"action": "save", **data})
    assert made.status_code == 303, made.text
    return made.headers["location"].split("/mailings/")[1].split("?")[0]


async def wait_until(check, what: str, tries: int = 150):
    for _ in range(tries):
        if value := await check():
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


async def test_a_mailing_reaches_exactly_the_regions_members_who_chose_the_interest(
    gateway, mail, notifications_db, people
):
    region, other_region = str(uuid.uuid4()), str(uuid.uuid4())
    interest = f"housing-{uuid.uuid4().hex[:6]}"
    chosen = await add_members(notifications_db, people, 3, region=region, interests=[interest], tag="chosen")
    other_interest = await add_members(notifications_db, people, 1, region=region, interests=["transport"], tag="trans")
    unsubscribed = await add_members(
        notifications_db, people, 1, region=region, interests=[interest], tag="unsub", consent=False
    )
    [suppressed] = await add_members(notifications_db, people, 1, region=region, interests=[interest], tag="bounced")
    key = Suppressions(launcher.secret_key()).address_key(suppressed[1])
    await notifications_db.execute("INSERT INTO suppressions (email, reason) VALUES ($1, 'hard_bounces')", key)
    people["keys"].append(key)
    elsewhere = await add_members(notifications_db, people, 1, region=other_region, interests=[interest], tag="away")
    headers, own_address = await region_organiser(notifications_db, people, region)

    count = await gateway.get(f"{BASE}/count", params={"interest": interest}, headers=headers)
    assert count.status_code == 200 and count.json() == {"count": 3}, count.text

    body = (
        "# News for {first_name}\n\nRead [our plan](https://example.org/plan).\n\n[Join us](https://example.org/join)"
    )
    mailing_id = await create(gateway, headers, {"subject": "Housing news", "body": body, "interest": interest})
    page = await gateway.get(f"{BASE}/{mailing_id}", headers=headers)
    assert page.status_code == 200 and 'id="audience-count">3<' in page.text

    # A test goes to the writer's own address, and nobody else's.
    since = await mail.mark()
    tested = await gateway.post(f"{BASE}/{mailing_id}/test", headers=headers)
    assert tested.status_code == 303, tested.text
    [test_message] = await mail.wait_for(own_address)
    assert test_message["subject"] == "[Test] Housing news"
    assert "News for Rosa" in test_message["text"]
    await asyncio.sleep(1)
    # The catcher is shared with every other test's email, so look at this test's addresses and this email only.
    audience = {email for _, email, _ in (*chosen, *other_interest, *unsubscribed, suppressed, *elsewhere)}
    caught = await mail.messages(since=since)
    assert [m["to"] for m in caught if m["subject"].startswith("[Test] Housing news")] == [[own_address]]
    assert [m["to"] for m in caught if audience & set(m["to"])] == []

    sent = await gateway.post(f"{BASE}/{mailing_id}/send", headers=headers, data={"when": "now"})
    assert sent.status_code == 303 and sent.headers["location"].endswith("/report"), sent.text
    messages = {}
    for _, email, name in chosen:
        [message] = await mail.wait_for(email)
        assert message["subject"] == "Housing news"
        assert f"News for {name.split()[0]}" in message["text"]
        assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "/unsubscribe?token=" in message["text"]
        messages[email] = message
    await asyncio.sleep(2)
    for _, email, _ in (*other_interest, *unsubscribed, suppressed, *elsewhere):
        assert await mail.messages(email) == [], email
    queued = await notifications_db.fetchval(
        "SELECT count(*) FROM deliveries WHERE kind = 'mailing' AND subject_ref = $1", mailing_id
    )
    assert queued == count.json()["count"]

    # A click: counted once per click, redirected to the link's own address; a forged link goes nowhere.
    [plan_link] = re.findall(r"https?://[^\s<>]*/notifications/r/[^\s<>]+", messages[chosen[0][1]]["text"])[:1]
    path = urlsplit(plan_link).path
    clicks = "SELECT clicks FROM mailing_links WHERE mailing_id = $1 AND url = 'https://example.org/plan'"
    assert await notifications_db.fetchval(clicks, mailing_id) == 0
    followed = await gateway.get(path)
    assert followed.status_code == 302 and followed.headers["location"] == "https://example.org/plan"
    assert await notifications_db.fetchval(clicks, mailing_id) == 1
    assert (await gateway.get(path)).status_code == 302
    assert await notifications_db.fetchval(clicks, mailing_id) == 2
    forged = await gateway.get(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"))
    assert forged.status_code == 404
    assert await notifications_db.fetchval(clicks, mailing_id) == 2

    async def report_done():
        page = await gateway.get(f"{BASE}/{mailing_id}/report", headers=headers)
        return page if 'id="sent">3<' in page.text else None

    report = await wait_until(report_done, "the report to show 3 sent")
    assert 'id="queued">3<' in report.text and 'id="failed">0<' in report.text and 'id="bounced">0<' in report.text
    assert "https://example.org/plan</td><td>2<" in report.text
    assert all(name in report.text for _, _, name in chosen)
    assert suppressed[2] not in report.text and elsewhere[0][2] not in report.text


async def test_the_report_names_everyone_a_page_at_a_time_and_counts_unsubscribes_beyond_the_first_page(
    gateway, mail, notifications_db, people
):
    region = str(uuid.uuid4())
    members = await add_members(notifications_db, people, 520, region=region, interests=[], tag="many")
    by_name = {name: (member_id, email) for member_id, email, name in members}
    headers, _ = await region_organiser(notifications_db, people, region)
    mailing_id = await create(gateway, headers, {"subject": f"Report {uuid.uuid4().hex[:6]}", "body": "Hi"})
    sent = await gateway.post(f"{BASE}/{mailing_id}/send", headers=headers, data={"when": "now"})
    assert sent.status_code == 303, sent.text

    async def all_sent():
        page = await gateway.get(f"{BASE}/{mailing_id}/report", headers=headers)
        return page if 'id="sent">520<' in page.text else None

    first = await wait_until(all_sent, "all 520 sent", tries=600)
    assert "520 people, by name; page 1 of 6." in first.text

    def named(page_text: str) -> list[str]:
        return re.findall(r'<li>(Many \d+)<br><span class="hint">[^<]* · sent \d', page_text)

    seen: list[str] = []
    for page in range(1, 7):
        answer = await gateway.get(f"{BASE}/{mailing_id}/report", params={"page": page}, headers=headers)
        assert answer.status_code == 200 and f"page {page} of 6." in answer.text
        seen += named(answer.text)
    assert sorted(seen) == sorted(by_name) and len(seen) == 520
    # A page past the end shows the last one; nonsense is refused without a 500.
    beyond = await gateway.get(f"{BASE}/{mailing_id}/report", params={"page": 99999999999999999999}, headers=headers)
    assert beyond.status_code == 200 and named(beyond.text) == seen[-20:]
    assert (await gateway.get(f"{BASE}/{mailing_id}/report", params={"page": "x"}, headers=headers)).status_code == 422

    # Someone named on the last page unsubscribes (the mirror's suppression, as membership's event leaves it), and
    # someone else is erased: the report counts the one and says the other is no longer named.
    unsubscriber, erased = seen[-1], seen[0]
    key = Suppressions(launcher.secret_key()).address_key(by_name[unsubscriber][1])
    await notifications_db.execute("INSERT INTO suppressions (email, reason) VALUES ($1, 'unsubscribed')", key)
    people["keys"].append(key)
    await notifications_db.execute("DELETE FROM recipients WHERE member_id = $1", by_name[erased][0])
    report = await gateway.get(f"{BASE}/{mailing_id}/report", headers=headers)
    assert 'id="unsubscribed">1<' in report.text
    assert "519 people, by name" in report.text and erased not in named(report.text)
    assert "1 person it went to has since left or asked to be forgotten" in report.text


async def test_the_mailings_list_pages_through_a_regions_mailings_newest_first_in_uk_time(
    gateway, notifications_db, people
):
    region = str(uuid.uuid4())
    headers, _ = await region_organiser(notifications_db, people, region)
    tag = uuid.uuid4().hex[:6]
    for i in range(53):
        await create(gateway, headers, {"subject": f"Draft {tag} {i:02d}", "body": "Hello"})
    later = await create(gateway, headers, {"subject": f"Later {tag}", "body": "Soon"})
    summer = datetime(datetime.now(NETWORK_TZ).year + 1, 7, 1, 18, 30)
    scheduled = await gateway.post(
        f"{BASE}/{later}/send", headers=headers, data={"when": "later", "send_at": summer.isoformat()}
    )
    assert scheduled.status_code == 303, scheduled.text

    def subjects(text: str) -> list[str]:
        return re.findall(rf">((?:Draft|Later) {tag}[^<]*)</a>", text)

    first = await gateway.get(BASE, headers=headers)
    assert first.status_code == 200 and "54 mailings; page 1 of 2." in first.text
    assert subjects(first.text)[:2] == [f"Later {tag}", f"Draft {tag} 52"] and len(subjects(first.text)) == 50
    # The time an organiser chose, as they chose it (18:30 in July is British Summer Time, 17:30 UTC).
    assert f"01 Jul {summer.year}, 18:30" in first.text
    second = await gateway.get(BASE, params={"page": 2}, headers=headers)
    assert subjects(second.text) == [f"Draft {tag} {i:02d}" for i in (3, 2, 1, 0)]
    assert subjects((await gateway.get(BASE, params={"page": 400}, headers=headers)).text) == subjects(second.text)
    huge = await gateway.get(BASE, params={"page": 99999999999999999999}, headers=headers)
    assert huge.status_code == 200 and subjects(huge.text) == subjects(second.text)
    # Another region's organiser sees none of them.
    stranger, _ = await region_organiser(notifications_db, people, str(uuid.uuid4()))
    assert subjects((await gateway.get(BASE, headers=stranger)).text) == []
    await notifications_db.execute("DELETE FROM mailings WHERE subject LIKE $1", f"% {tag}%")


async def test_another_regions_organiser_cannot_see_count_into_or_send_a_mailing(gateway, notifications_db, people):
    region = str(uuid.uuid4())
    headers, _ = await region_organiser(notifications_db, people, region)
    mailing_id = await create(gateway, headers, {"subject": "Ours", "body": "Hello"})
    stranger, _ = await region_organiser(notifications_db, people, str(uuid.uuid4()))
    for path in ("", "/preview", "/send", "/report"):
        assert (await gateway.get(f"{BASE}/{mailing_id}{path}", headers=stranger)).status_code == 404
    refused = await gateway.post(f"{BASE}/{mailing_id}/send", headers=stranger, data={"when": "now"})
    assert refused.status_code == 404
    assert await notifications_db.fetchval("SELECT status FROM mailings WHERE id = $1", mailing_id) == "draft"
    # Choosing a place outside your scope is refused, never widened.
    outside = await gateway.get(f"{BASE}/count", params={"unit": region}, headers=stranger)
    assert outside.status_code == 422


@pytest.mark.fault
async def test_a_mailing_interrupted_by_a_killed_service_sends_one_email_each_after_restart(
    gateway, mail, notifications_db, people
):
    region = str(uuid.uuid4())
    members = await add_members(notifications_db, people, 800, region=region, interests=[], tag="kill")
    emails = [email for _, email, _ in members]
    headers, _ = await region_organiser(notifications_db, people, region)
    subject = f"Kill test {uuid.uuid4().hex[:6]}"
    mailing_id = await create(gateway, headers, {"subject": subject, "body": "Hello {first_name}"})
    since = await mail.mark()
    sent = await gateway.post(f"{BASE}/{mailing_id}/send", headers=headers, data={"when": "now"})
    assert sent.status_code == 303, sent.text

    await Tally(mail, emails, subject, since).kill_midway_then_expect_one_each(at_least=40, poll_s=0.1)
    assert await notifications_db.fetchval(
        "SELECT count(*) FROM deliveries WHERE kind = 'mailing' AND subject_ref = $1", mailing_id
    ) == len(emails)


async def test_a_scheduled_mailing_waits_for_its_time_then_goes(gateway, mail, notifications_db, people):
    region = str(uuid.uuid4())
    [(_, email, _)] = await add_members(notifications_db, people, 1, region=region, interests=[], tag="later")
    headers, _ = await region_organiser(notifications_db, people, region)
    mailing_id = await create(gateway, headers, {"subject": "Later news", "body": "Soon"})
    at = (datetime.now(NETWORK_TZ) + timedelta(seconds=4)).replace(microsecond=0, tzinfo=None).isoformat()
    scheduled = await gateway.post(f"{BASE}/{mailing_id}/send", headers=headers, data={"when": "later", "send_at": at})
    assert scheduled.status_code == 303, scheduled.text
    assert await notifications_db.fetchval("SELECT status FROM mailings WHERE id = $1", mailing_id) == "scheduled"
    assert (
        await notifications_db.fetchval(
            "SELECT count(*) FROM deliveries WHERE kind = 'mailing' AND subject_ref = $1", mailing_id
        )
        == 0
    )
    [message] = await mail.wait_for(email)
    assert message["subject"] == "Later news"
    # A time in the past is refused with the reason, and the draft stays a draft.
    draft_id = await create(gateway, headers, {"subject": "Past", "body": "Too late"})
    past = await gateway.post(
        f"{BASE}/{draft_id}/send", headers=headers, data={"when": "later", "send_at": "2020-01-01T09:00"}
    )
    assert past.status_code == 422 and "Choose a time in the future" in past.text
    assert await notifications_db.fetchval("SELECT status FROM mailings WHERE id = $1", draft_id) == "draft"


async def test_the_count_follows_who_took_part_and_who_has_been_quiet(gateway, notifications_db, people):
    region = str(uuid.uuid4())
    [active, quiet] = await add_members(notifications_db, people, 2, region=region, interests=[], tag="part")
    await notifications_db.execute(
        "INSERT INTO participation (member_id, first_at, last_at) VALUES ($1, now() - interval '3 days', "
        "now() - interval '3 days')",
        active[0],
    )
    headers, _ = await region_organiser(notifications_db, people, region)

    async def count(**params) -> int:
        answered = await gateway.get(f"{BASE}/count", params=params, headers=headers)
        assert answered.status_code == 200, answered.text
        return int(answered.json()["count"])

    assert await count() == 2
    assert await count(took_part_within_days="30") == 1
    assert await count(took_part_within_days="1") == 0
    assert await count(quiet_for_days="30") == 1
    assert await count(quiet_for_days="1") == 2
    await notifications_db.execute("DELETE FROM participation WHERE member_id = $1", active[0])


async def add_place(conn, made, kind: str, name: str, parent: str | None = None) -> str:
    """A region, group or sub-team by name in notifications' mirror, as OrganisationUnitDefined leaves it."""
    unit_id = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO units (unit_id, kind, name, parent_id) VALUES ($1, $2, $3, $4)", unit_id, kind, name, parent
    )
    made["units"].append(unit_id)
    return unit_id


async def add_member(
    conn,
    made,
    name: str,
    *,
    region: str,
    groups: tuple[str, ...] = (),
    subteams: tuple[str, ...] = (),
    interests: tuple[str, ...] = (),
    level: str | None = None,
    joined_days_ago: int = 10,
    took_part_days_ago: int | None = None,
    consent: bool = True,
    suppressed: bool = False,
) -> str:
    """One confirmed member with these traits in the mirror (and their participation, their suppression)."""
    member_id, email = str(uuid.uuid4()), f"combo-{uuid.uuid4().hex[:10]}@example.org"
    key = Suppressions(launcher.secret_key()).address_key(email)
    await conn.execute(
        "INSERT INTO recipients (member_id, email, name, email_consent, status, region_id, group_ids, subteam_ids, "
        "interests, engagement_level, joined_at, address_key, updated_at) VALUES ($1, $2, $3, $4, 'confirmed', $5, "
        "$6, $7, $8, $9, now() - make_interval(days => $10), $11, now())",
        member_id, email, name, consent, region, list(groups), list(subteams), list(interests), level,
        joined_days_ago, key,
    )  # fmt: skip
    made["members"].append(member_id)
    if took_part_days_ago is not None:
        await conn.execute(
            "INSERT INTO participation (member_id, first_at, last_at) VALUES ($1, now() - make_interval(days => $2), "
            "now() - make_interval(days => $2))",
            member_id,
            took_part_days_ago,
        )
    if suppressed:
        await conn.execute("INSERT INTO suppressions (email, reason) VALUES ($1, 'unsubscribed')", key)
        made["keys"].append(key)
    return member_id


async def test_a_combination_of_filters_counts_and_lists_exactly_the_people_it_describes(
    gateway, notifications_db, people
):
    db, tag = notifications_db, uuid.uuid4().hex[:6]
    region = await add_place(db, people, "region", f"Combo region {tag}")
    group = await add_place(db, people, "group", f"Combo group {tag}", region)
    subteam = await add_place(db, people, "subteam", f"Combo sub-team {tag}", region)
    housing, other = f"housing-{tag}", f"transport-{tag}"
    fits = dict(region=region, groups=(group,), interests=(housing,), level="volunteer", took_part_days_ago=3)
    await add_member(db, people, "Ada Chosen", **fits)
    await add_member(db, people, "Bea Chosen", **{**fits, "level": "organiser", "took_part_days_ago": 20})
    await add_member(db, people, "Cy Never", **{**fits, "took_part_days_ago": None})
    await add_member(db, people, "Di Long-ago", **{**fits, "took_part_days_ago": 45})
    await add_member(db, people, "Ed Other-interest", **{**fits, "interests": (other,)})
    await add_member(db, people, "Fi Supporter", **{**fits, "level": "supporter"})
    await add_member(db, people, "Gus Subteam", **{**fits, "subteams": (subteam,)})
    await add_member(db, people, "Hal Unsubscribed", **fits, suppressed=True)
    await add_member(db, people, "Ivy No-consent", **fits, consent=False)
    await add_member(db, people, "Jo Region-only", **{**fits, "groups": ()})
    await add_member(db, people, "Kit Old-joiner", **fits, joined_days_ago=400)
    await add_member(db, people, "Lou Elsewhere", **{**fits, "region": str(uuid.uuid4()), "groups": ()})
    headers, _ = await region_organiser(db, people, region)
    audience = {
        "unit": group,
        "interest": [housing, f"unused-{tag}"],
        "level": ["volunteer", "organiser"],
        "exclude": subteam,
        "took_part_within_days": "30",
        "joined_within_days": "365",
    }

    counted = await gateway.get(f"{BASE}/count", params=audience, headers=headers)
    assert counted.status_code == 200 and counted.json() == {"count": 2}, counted.text
    mailing_id = await create(gateway, headers, {"subject": "Combo", "body": "Hello {first_name}", **audience})
    preview = await gateway.get(f"{BASE}/{mailing_id}/preview", headers=headers)
    assert preview.status_code == 200
    listed = re.findall(r'<option value="[^"]+"(?: selected)?>([^<]+)</option>', preview.text)
    assert listed == ["Ada Chosen", "Bea Chosen"]


async def test_the_count_follows_suppressions_participation_and_changes_whichever_comes_first(
    gateway, notifications_db, people
):
    """The count reads what the database keeps on each recipient's row (migration 0013): it must follow a
    suppression added or lifted after the member arrived or before, an address changed onto a suppressed one,
    participation recorded before the member's row exists or moved later, and a member moving region."""
    db, tag = notifications_db, uuid.uuid4().hex[:6]
    region, elsewhere = str(uuid.uuid4()), str(uuid.uuid4())
    interest = f"parks-{tag}"
    keys = Suppressions(launcher.secret_key())
    headers, _ = await region_organiser(db, people, region)

    async def count(**params) -> int:
        answered = await gateway.get(f"{BASE}/count", params={"interest": interest, **params}, headers=headers)
        assert answered.status_code == 200, answered.text
        return int(answered.json()["count"])

    # Participation that arrived before the member's row, and a suppression of an address before it joins.
    early = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO participation (member_id, first_at, last_at) VALUES ($1, now() - interval '2 days', "
        "now() - interval '2 days')",
        early,
    )
    people["members"].append(early)
    barred = f"barred-{tag}@example.org"
    await db.execute("INSERT INTO suppressions (email, reason) VALUES ($1, 'hard_bounces')", keys.address_key(barred))
    people["keys"].append(keys.address_key(barred))
    for member_id, email in ((early, f"early-{tag}@example.org"), (str(uuid.uuid4()), barred)):
        await db.execute(
            "INSERT INTO recipients (member_id, email, name, email_consent, status, region_id, interests, "
            "address_key, updated_at) VALUES ($1, $2, 'Early', true, 'confirmed', $3, $4, $5, now())",
            member_id, email, region, [interest], keys.address_key(email),
        )  # fmt: skip
        people["members"].append(member_id)
    assert await count() == 1
    assert await count(took_part_within_days="7") == 1

    [(later, later_email, _)] = await add_members(db, people, 1, region=region, interests=[interest], tag="later")
    assert await count() == 2
    assert await count(took_part_within_days="120") == 1 and await count(quiet_for_days="120") == 1
    # Taking part later moves them from the quiet to those who took part.
    await db.execute(
        "INSERT INTO participation (member_id, first_at, last_at) VALUES ($1, now() - interval '90 days', "
        "now() - interval '90 days')",
        later,
    )
    assert await count(took_part_within_days="120") == 2 and await count(quiet_for_days="120") == 0
    assert await count(took_part_within_days="7") == 1 and await count(quiet_for_days="7") == 1
    await db.execute("UPDATE participation SET last_at = now() WHERE member_id = $1", later)
    assert await count(took_part_within_days="7") == 2 and await count(quiet_for_days="7") == 0

    # Suppressed after they arrived, then lifted.
    later_key = keys.address_key(later_email)
    people["keys"].append(later_key)
    await db.execute("INSERT INTO suppressions (email, reason) VALUES ($1, 'unsubscribed')", later_key)
    assert await count() == 1
    await db.execute("DELETE FROM suppressions WHERE email = $1", later_key)
    assert await count() == 2
    # An address changed onto a suppressed one, and back.
    await db.execute(
        "UPDATE recipients SET email = $2, address_key = $3 WHERE member_id = $1",
        later,
        barred,
        keys.address_key(barred),
    )
    assert await count() == 1
    await db.execute(
        "UPDATE recipients SET email = $2, address_key = $3 WHERE member_id = $1", later, later_email, later_key
    )
    assert await count() == 2
    # Moving to another region takes them out of this one's count; a new interest, out of the interest's.
    await db.execute("UPDATE recipients SET region_id = $2 WHERE member_id = $1", later, elsewhere)
    assert await count() == 1
    await db.execute("UPDATE recipients SET interests = '{}' WHERE member_id = $1", early)
    assert await count() == 0
