"""The members export streams (issue 20): rows are read and sent a batch at a time, so an export of any size starts
at once and holds one batch; it is still every member in scope that matches, in the same columns and order,
audited with how many, and nothing for an organiser of another part of the network."""

from __future__ import annotations

import csv
import io
import uuid

from services.membership import seeds
from services.membership.roster import CSV_COLUMNS
from shared.exports import EXPORT_BATCH
from tests.membership.conftest import make_organiser

BIRMINGHAM = seeds.unit_id("region", "birmingham-black-country")
COVENTRY = seeds.unit_id("group", "coventry")
NOTTINGHAM = seeds.unit_id("group", "nottingham")


async def test_an_export_of_more_members_than_a_batch_is_complete_and_other_scopes_get_none_of_it(client, db):
    tag = uuid.uuid4().hex[:12]
    n = EXPORT_BATCH + 37  # more than one batch of the cursor
    await db.execute(
        "INSERT INTO members (id, email_normalised, name, engagement_level, email_consent, source, region_id, "
        "status, interests, joined_at) SELECT gen_random_uuid()::text, 'stream-' || $1 || '-' || i || '@example.org', "
        "'Stream ' || $1 || ' ' || i, 'supporter', i % 2 = 0, 'test', $3, 'confirmed', ARRAY['housing'], "
        "now() - interval '1 day' + i * interval '1 second' FROM generate_series(1, $2) AS i",
        tag, n, BIRMINGHAM)
    await db.execute("INSERT INTO member_groups (member_id, group_id) SELECT id, $2 FROM members WHERE name LIKE $1",
                     f"Stream {tag} %", COVENTRY)
    try:
        expected = [r["id"] for r in await db.fetch(
            "SELECT id FROM members WHERE name LIKE $1 ORDER BY joined_at, id", f"Stream {tag} %")]
        organiser_id, network = await make_organiser(db)
        async with client.stream("GET", "/members/export.csv", params={"q": tag}, headers=network) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
            assert "content-length" not in response.headers  # sent as it is read
            assert response.headers["x-exported-rows"] == str(n) and response.headers["cache-control"] == "no-store"
            body = "".join([chunk async for chunk in response.aiter_text()])
        lines = list(csv.reader(io.StringIO(body)))
        assert lines[0] == list(CSV_COLUMNS)
        rows = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
        assert [r["id"] for r in rows] == expected  # every one, once, oldest first
        first, last = rows[0], rows[-1]
        assert first["email"] == f"stream-{tag}-1@example.org" and first["name"] == f"Stream {tag} 1"
        assert (first["region"], first["groups"], first["interests"]) == (
            "Birmingham and the Black Country", "Coventry", "housing")
        assert (first["email_consent"], last["email_consent"]) == ("no", "no" if n % 2 else "yes")
        assert last["email"] == f"stream-{tag}-{n}@example.org"
        audited = await db.fetchval("SELECT detail FROM audit_log WHERE actor = $1 AND action = 'members.export'",
                                    f"organiser:{organiser_id}")
        assert f'"exported": {n}' in audited

        _, elsewhere = await make_organiser(db, "group", NOTTINGHAM)
        other = await client.get("/members/export.csv", params={"q": tag}, headers=elsewhere)
        assert other.status_code == 200 and other.headers["x-exported-rows"] == "0"
        assert list(csv.reader(io.StringIO(other.text))) == [list(CSV_COLUMNS)] and tag not in other.text
        stranger = await client.get("/members/export.csv", params={"q": tag}, headers={"accept": "text/csv"})
        assert stranger.status_code == 401 and tag not in stranger.text
    finally:
        await db.execute("DELETE FROM members WHERE name LIKE $1", f"Stream {tag} %")
