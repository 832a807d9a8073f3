"""Organisers' pages: sign in, start a campaign and add asks with forms, moderate pledges, load the MP dataset."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.campaigns.conftest import PETITION, SAMPLE_MPS, ask_path, launch, of_type, organiser_token


@asynccontextmanager
async def signed_in(campaigns_server, scope_type: str = "network",
                    scope_id: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client with an organiser's session cookie (set by membership's /signin on the gateway's
    origin, which every service shares)."""
    async with httpx.AsyncClient(base_url=campaigns_server.base_url, timeout=60, follow_redirects=False,
                                 cookies={"gs_organiser": organiser_token(scope_type, scope_id)}) as c:
        yield c


async def test_pages_need_a_signed_in_organiser(client):
    assert (await client.get("/campaigns/organise")).status_code == 401
    dashboard = await client.get("/dashboard")
    assert dashboard.status_code == 401 and "Sign in to see the dashboard" in dashboard.text
    forged = await client.get("/campaigns/organise", cookies={"gs_organiser": "forged"})
    assert forged.status_code == 401


async def test_an_organiser_drafts_a_campaign_adds_an_ask_previews_and_publishes_it(campaigns_server, client, kafka):
    async with signed_in(campaigns_server) as c:
        title = f"Policing campaign {uuid.uuid4().hex[:6]}"
        empty = await c.post("/campaigns/organise/new", data={"title": "", "goal": ""})
        assert empty.status_code == 422 and "Enter a title" in empty.text
        created = await c.post("/campaigns/organise/new", data={
            "title": title, "goal": "Stop discriminatory stop and search", "summary": "Why it matters.",
            "issues": "racism in policing, stop and search", "scope": "network"})
        assert created.status_code == 303
        admin = created.headers["location"]
        campaign_id = admin.rsplit("/", 1)[1]
        assert "A draft" in (await c.get(admin)).text
        assert (await client.get(f"/campaigns/{campaign_id}")).status_code == 404  # not public yet
        assert title not in (await client.get("/campaigns")).text
        early = await c.post(f"{admin}/publish")
        assert early.status_code == 422 and "Add at least one ask before publishing" in early.text

        chooser = await c.get(admin)  # the ask form's first step: which kind, then that kind's fields only
        assert 'name="kind"' in chooser.text and 'name="addressee"' not in chooser.text
        petition = await c.get(admin, params={"kind": "petition"})
        assert 'name="addressee"' in petition.text and 'name="letter_subject"' not in petition.text
        letter = await c.get(admin, params={"kind": "write_to_mp"})
        assert 'name="letter_subject"' in letter.text and 'name="addressee"' not in letter.text
        refused = await c.post(f"{admin}/asks", data={"kind": "petition", "body": "We ask you..."})
        assert refused.status_code == 422 and "Say who the petition is addressed to" in refused.text
        assert "We ask you..." in refused.text and 'name="letter_subject"' not in refused.text  # kept, same kind
        added = await c.post(f"{admin}/asks", data={"kind": "petition", "title": "Sign for fair policing",
                                                    "addressee": "The Chief Constable", "body": "We ask you...",
                                                    "goal": "500"})
        assert added.status_code == 303
        preview = await c.get(f"{admin}/preview")
        assert preview.status_code == 200 and "Preview" in preview.text and "Sign for fair policing" in preview.text
        assert (await client.get(f"/campaigns/{campaign_id}")).status_code == 404  # still a draft
        assert await kafka.settle(of_type("CampaignLaunched", campaign_id=campaign_id), seconds=3) == []

        confirm = await c.get(f"{admin}/publish")
        assert confirm.status_code == 200 and "Yes, publish the campaign" in confirm.text
        published = await c.post(f"{admin}/publish")
        assert published.status_code == 303
        launched = (await kafka.wait_for(of_type("CampaignLaunched", campaign_id=campaign_id)))[0]
        assert launched.data["issues"] == ["racism in policing", "stop and search"]
        await kafka.wait_for(of_type("AskPublished", campaign_id=campaign_id, title="Sign for fair policing"))
        public = await client.get(f"/campaigns/{campaign_id}")
        assert public.status_code == 200 and "Sign for fair policing" in public.text
        assert title in (await c.get("/campaigns/organise")).text
        confirm = await c.get(f"{admin}/close")
        assert confirm.status_code == 200 and "Yes, close the campaign" in confirm.text
        closed = await c.post(f"{admin}/close")
        assert closed.status_code == 303
        await kafka.wait_for(of_type("CampaignClosed", campaign_id=campaign_id))


async def test_pledges_are_moderated_from_the_organisers_page(campaigns_server, client, organiser):
    campaign = await launch(client, organiser)
    words = f"I pledge to record and report what I see {uuid.uuid4().hex[:6]}"
    await client.post(ask_path(campaign, "pledge"), data={"name": "Sam Okoro", "email": "sam@example.org",
                                                          "pledge_text": words})
    async with signed_in(campaigns_server) as c:
        queue = await c.get("/campaigns/organise/pledges")
        assert words in queue.text
        action_id = queue.text.split(words)[1].split('action="/campaigns/organise/pledges/')[1].split('"')[0]
        decided = await c.post(f"/campaigns/organise/pledges/{action_id}", data={"decision": "approved"})
        assert decided.status_code == 303
        assert words not in (await c.get("/campaigns/organise/pledges")).text
    assert words in (await client.get(ask_path(campaign, "pledge"))).text


async def test_network_organisers_load_the_mp_dataset_from_a_file(campaigns_server):
    files = {"file": ("mps.csv", SAMPLE_MPS.read_bytes(), "text/csv")}
    async with signed_in(campaigns_server, "region", "some-region") as c:
        page = await c.get("/campaigns/organise/mps")
        assert "Only network organisers can change the dataset" in page.text
        assert (await c.post("/campaigns/organise/mps", files=files)).status_code == 403
    async with signed_in(campaigns_server) as c:
        broken = await c.post("/campaigns/organise/mps", files={"file": ("x.csv", b"name\nB1\n", "text/csv")})
        assert broken.status_code == 422 and "The file needs the columns" in broken.text
        loaded = await c.post("/campaigns/organise/mps", files=files, data={"mode": "replace"})
        assert loaded.status_code == 200 and "The dataset is loaded" in loaded.text
        ladder = await c.get("/campaigns/organise/ladder")
        assert "Activist" in ladder.text


async def test_an_organisers_campaigns_come_25_a_page_latest_first_with_their_actions_counted(campaigns_server, client):
    group = str(uuid.uuid4())  # a group of this test's own: its organiser sees only these campaigns
    headers = {"Authorization": f"Bearer {organiser_token('group', group)}"}
    launched = [await launch(client, headers, scope_type="group", scope_id=group, asks=[PETITION]) for _ in range(26)]
    for email in ("ada-1@example.org", "ada-2@example.org"):
        signed = await client.post(ask_path(launched[-1], "petition"), data={"name": "Ada Lovelace", "email": email})
        assert signed.status_code == 303

    def rows(html: str) -> list[tuple[str, str]]:
        """(title, actions) of each campaign listed."""
        row = r'<th scope="row"><a href="[^"]+">([^<]+)</a></th><td>[^<]*</td><td>[^<]*</td><td>([^<]+)</td>'
        return re.findall(row, html)

    async with signed_in(campaigns_server, "group", group) as c:
        first = await c.get("/campaigns/organise")
        assert first.status_code == 200
        listed = rows(first.text)
        assert len(listed) == 25 and listed[0] == (launched[-1]["title"], "2")
        assert {t for t, _ in listed} == {x["title"] for x in launched[1:]} and 'rel="next"' in first.text
        second = await c.get("/campaigns/organise", params={"page": "2"})
        assert rows(second.text) == [(launched[0]["title"], "0")]
        assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
        assert rows((await c.get("/campaigns/organise", params={"page": "many"})).text) == listed
        beyond = await c.get("/campaigns/organise", params={"page": "9"})
        assert beyond.status_code == 200 and rows(beyond.text) == [] and "no more campaigns" in beyond.text
