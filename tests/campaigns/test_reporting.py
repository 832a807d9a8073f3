"""Network reporting: a read model built only from events, scoped by the organiser's access, as charts, JSON and CSV,
and rebuilt from the beginning of the topics with the same figures."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from deploy.local import launcher
from tests.campaigns.conftest import REPORTING_GROUP, SECRET, joined, organiser_headers, publish, quiet

ROOT = Path(__file__).resolve().parents[2]


async def data_for(client, headers, **params) -> dict[str, Any]:
    response = await client.get("/dashboard/data.json", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_organiser_of_one_region_sees_only_that_regions_figures(client, network, campaigns_server):
    await quiet(campaigns_server)
    a = organiser_headers("region", network["region_a"].unit_id)
    data = await data_for(client, a)
    assert data["scope"] == {"type": "region", "id": network["region_a"].unit_id}
    assert data["headline"]["members"] == 3 and data["headline"]["actions"] == 2
    assert data["growth"]["totals"]["members"][-1] == 3 and sum(data["growth"]["totals"]["joined"]) == 3
    assert [(s["name"], s["members"][-1]) for s in data["growth"]["series"]] == [(network["group_a"].name, 3)]
    assert data["attendance"]["going"] == 2 and data["attendance"]["attended"] == 1
    assert data["attendance"]["rate"] == 0.5
    assert [m["title"] for m in data["attendance"]["meetings"]] == [f"Meeting A {network['run']}"]
    petition = next(a for a in data["actions"] if a["kind"] == "petition")
    assert petition["campaign"] == network["campaign"]["title"] and petition["actions"] == 2
    assert data["partners"] == [{"partner_id": network["partner"].unit_id, "name": network["partner"].name,
                                 "campaigns": 1, "actions": 2, "members": 1}]
    funnel = {f["level"]: f["members"] for f in data["funnel"]}
    assert funnel["supporter"] == 3 and funnel["participant"] == 2 and funnel["organiser"] == 0

    b = await data_for(client, organiser_headers("region", network["region_b"].unit_id))
    assert b["headline"]["members"] == 2 and b["headline"]["actions"] == 1
    assert b["attendance"]["going"] == 1 and b["attendance"]["attended"] == 0
    assert network["group_a"].name not in str(b)

    group = await data_for(client, organiser_headers("group", network["group_b"].unit_id))
    assert group["headline"]["members"] == 2
    narrowed = await data_for(client, organiser_headers(), region=network["region_a"].unit_id)
    assert narrowed["headline"] == data["headline"]
    outside = await client.get("/dashboard/data.json", headers=a, params={"region": network["region_b"].unit_id})
    assert outside.status_code == 403
    page = await client.get("/dashboard", headers=a, params={"region": network["region_b"].unit_id})
    assert page.status_code == 403
    assert (await client.get("/dashboard/data.json")).status_code == 401


async def test_each_report_exports_as_csv_for_the_organisers_scope(client, network, campaigns_server):
    await quiet(campaigns_server)
    a = organiser_headers("region", network["region_a"].unit_id)
    growth = await client.get("/dashboard/export/growth.csv", headers=a)
    assert growth.headers["content-type"].startswith("text/csv")
    assert f'growth-region-{network["region_a"].unit_id}.csv' in growth.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(growth.text)))
    assert rows[0] == ["week_starting", "group_id", "group", "members", "joined"]
    assert rows[-1][2:4] == ["all", "3"]
    actions = list(csv.DictReader(io.StringIO((await client.get("/dashboard/export/actions.csv", headers=a)).text)))
    assert {(r["campaign"], r["kind"], r["actions"]) for r in actions if r["campaign_id"] ==
            network["campaign"]["id"]} == {(network["campaign"]["title"], "petition", "2"),
                                          (network["campaign"]["title"], "share", "0")}
    for report in ("funnel", "attendance", "partners"):
        response = await client.get(f"/dashboard/export/{report}.csv", headers=a)
        assert response.status_code == 200 and len(response.text.splitlines()) >= 2, report
    assert (await client.get("/dashboard/export/secrets.csv", headers=a)).status_code == 404


def _command(*args: str, campaigns_server) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": campaigns_server.settings.database_url,
           "KAFKA_BOOTSTRAP_SERVERS": launcher.KAFKA_BOOTSTRAP, "SECRET_KEY": SECRET, "LOG_JSON": "false",
           "LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "services.campaigns", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


async def _snapshots(client, network) -> list[dict[str, Any]]:
    scopes = [organiser_headers(), organiser_headers("region", network["region_a"].unit_id),
              organiser_headers("region", network["region_b"].unit_id),
              organiser_headers("group", network["group_a"].unit_id)]
    return [await data_for(client, h) for h in scopes]


async def test_rebuilding_the_read_model_from_the_topics_gives_the_same_figures(client, network, campaigns_server, db):
    await quiet(campaigns_server)
    live = await _snapshots(client, network)
    checked = await asyncio.to_thread(_command, "rebuild-reporting", "--check", "--group", REPORTING_GROUP,
                                      campaigns_server=campaigns_server)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "the rebuilt figures equal the live ones" in checked.stdout

    # Lose part of the live model; the rebuild brings it back from Kafka alone.
    await db.execute("DELETE FROM rpt_members WHERE region_id = $1", network["region_a"].unit_id)
    await db.execute("DELETE FROM rpt_actions")
    await db.execute("DELETE FROM rpt_tallies WHERE scope_id = $1", network["region_a"].unit_id)
    damaged = await data_for(client, organiser_headers("region", network["region_a"].unit_id))
    assert damaged["headline"]["members"] == 0
    rebuilt = await asyncio.to_thread(_command, "rebuild-reporting", "--group", REPORTING_GROUP,
                                      campaigns_server=campaigns_server)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "replaced by the rebuilt one" in rebuilt.stdout
    await quiet(campaigns_server)
    assert await _snapshots(client, network) == live
    assert await db.fetchval("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'rpt_rebuild'") == 0
    # The live consumer carries on after the swap: a new member in region A is counted once.
    newcomer = str(uuid.uuid4())
    await publish(joined(newcomer, network["region_a"].unit_id, [network["group_a"].unit_id]))
    await quiet(campaigns_server)
    after = await data_for(client, organiser_headers("region", network["region_a"].unit_id))
    assert after["headline"]["members"] == live[1]["headline"]["members"] + 1
