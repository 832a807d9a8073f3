"""Campaigns and their asks: launched, published, closed through the outbox; meetings linked by events only;
the MP dataset organisers load."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.events.catalog import MeetingScheduled, RsvpReceived
from tests.campaigns.conftest import (
    LETTER,
    PETITION,
    SAMPLE_MPS,
    ask_of,
    launch,
    of_type,
    organiser_headers,
    poll,
    publish,
    unit,
)


async def test_launching_a_campaign_publishes_campaign_launched_then_each_ask_in_order(client, organiser, kafka):
    campaign = await launch(client, organiser, partner_ids=["partner-1"])
    assert campaign["status"] == "live" and len(campaign["asks"]) == 4
    events = await kafka.wait_for(lambda e: e.data.get("campaign_id") == campaign["id"], count=5)
    keyed = kafka.keyed(lambda e: e.data.get("campaign_id") == campaign["id"])
    assert {key for key, _ in keyed} == {campaign["id"]}  # one key: the campaign's events stay in order
    assert [e.type for e in events] == ["CampaignLaunched"] + ["AskPublished"] * 4
    assert events[0].data["partner_ids"] == ["partner-1"] and events[0].data["goal"] == "Equal care for everyone"
    petition = ask_of(campaign, "petition")
    assert events[1].data == {"campaign_id": campaign["id"], "ask_id": petition["id"], "kind": "petition",
                              "title": "Sign the petition", "target": 1000, "meeting_id": None}
    page = await client.get(f"/campaigns/{campaign['id']}")
    assert page.status_code == 200 and campaign["title"] in page.text and "Sign the petition" in page.text


async def test_an_ask_without_what_it_needs_is_refused_with_what_to_fix(client, organiser, kafka):
    campaign = await launch(client, organiser, asks=[])
    response = await client.post(f"/campaigns/api/campaigns/{campaign['id']}/asks", headers=organiser,
                                 json={"kind": "petition", "body": "Text"})
    assert response.status_code == 422
    assert response.json()["errors"] == {"addressee": "Say who the petition is addressed to"}
    response = await client.post("/campaigns/api/campaigns", headers=organiser, json={"title": "", "goal": ""})
    assert response.status_code == 422 and set(response.json()["errors"]) == {"title", "goal"}


async def test_a_region_organiser_launches_only_inside_their_region(client):
    region = unit("region", "West Midlands test")
    other = unit("region", "East Midlands test")
    await publish(region, other)
    headers = organiser_headers("region", region.unit_id)
    refused = await client.post("/campaigns/api/campaigns", headers=headers,
                                json={"title": "Elsewhere", "goal": "g", "scope_type": "region",
                                      "scope_id": other.unit_id})
    assert refused.status_code == 403 and "You organise the region" in refused.json()["detail"]
    network_wide = await client.post("/campaigns/api/campaigns", headers=headers,
                                     json={"title": "Everywhere", "goal": "g"})
    assert network_wide.status_code == 403
    campaign = await launch(client, headers, scope_type="region", scope_id=region.unit_id, asks=[])
    assert campaign["region_id"] == region.unit_id
    listed = (await client.get("/campaigns/api/campaigns", headers=organiser_headers("region", other.unit_id))).json()
    assert campaign["id"] not in {c["id"] for c in listed["campaigns"]}


async def test_closing_a_campaign_publishes_campaign_closed_once(client, organiser, kafka):
    campaign = await launch(client, organiser)
    closed = await client.post(f"/campaigns/api/campaigns/{campaign['id']}/close", headers=organiser)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    again = await client.post(f"/campaigns/api/campaigns/{campaign['id']}/close", headers=organiser)
    assert again.status_code == 200
    await kafka.wait_for(of_type("CampaignClosed", campaign_id=campaign["id"]))
    assert len(kafka.envelopes(of_type("CampaignClosed", campaign_id=campaign["id"]))) == 1
    page = await client.get(f"/campaigns/{campaign['id']}")
    assert "This campaign has closed" in page.text


def scheduled(meeting_id: str, campaign_id: str | None, **overrides) -> MeetingScheduled:
    start = datetime.now(UTC) + timedelta(days=7)
    fields = dict(meeting_id=meeting_id, title="Campaign planning meeting", kind="in_person", scope_type="network",
                  starts_at=start, ends_at=start + timedelta(hours=2), venue="Friends Meeting House",
                  campaign_id=campaign_id, public_url=f"http://events.example/events/{meeting_id}")
    fields.update(overrides)
    return MeetingScheduled(**fields)


async def test_a_meeting_scheduled_for_a_campaign_becomes_an_ask_and_its_rsvps_count_once(client, organiser, kafka, db):
    campaign = await launch(client, organiser, asks=[])
    meeting_id = str(uuid.uuid4())
    await publish(scheduled(meeting_id, campaign["id"]))
    ask = (await kafka.wait_for(of_type("AskPublished", campaign_id=campaign["id"], kind="attend")))[0]
    assert ask.data["meeting_id"] == meeting_id and ask.data["title"] == "Come to Campaign planning meeting"
    page = await client.get(f"/campaigns/{campaign['id']}/asks/{ask.data['ask_id']}")
    assert f"http://events.example/events/{meeting_id}" in page.text
    assert "RSVP for Campaign planning meeting" in page.text

    member_id, rsvp_id = str(uuid.uuid4()), str(uuid.uuid4())
    rsvp = RsvpReceived(meeting_id=meeting_id, rsvp_id=rsvp_id, member_id=member_id, status="going")
    await publish(rsvp, rsvp)  # delivered twice (another envelope, same RSVP): one action
    await publish(scheduled(meeting_id, campaign["id"], title="Campaign planning meeting (moved)"))  # no second ask
    taken = await kafka.wait_for(of_type("ActionTaken", ask_id=ask.data["ask_id"]))
    assert taken[0].data["kind"] == "attend" and taken[0].data["member_id"] == member_id
    await poll(lambda: db.fetchval("SELECT title = 'Campaign planning meeting (moved)' FROM meetings "
                                   "WHERE meeting_id = $1", meeting_id))
    assert await db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1", ask.data["ask_id"]) == 1
    assert await db.fetchval("SELECT count(*) FROM asks WHERE campaign_id = $1", campaign["id"]) == 1
    assert len(kafka.envelopes(of_type("ActionTaken", ask_id=ask.data["ask_id"]))) == 1


async def test_an_organiser_links_a_known_meeting_to_an_attend_ask(client, organiser, kafka, db):
    meeting_id = str(uuid.uuid4())
    await publish(scheduled(meeting_id, None, title="Open meeting"))
    await poll(lambda: db.fetchval("SELECT 1 FROM meetings WHERE meeting_id = $1", meeting_id))
    campaign = await launch(client, organiser, asks=[{"kind": "attend", "meeting_id": meeting_id}])
    assert ask_of(campaign, "attend")["meeting_id"] == meeting_id
    unknown = await client.post(f"/campaigns/api/campaigns/{campaign['id']}/asks", headers=organiser,
                                json={"kind": "attend", "meeting_id": str(uuid.uuid4())})
    assert unknown.status_code == 422 and "There is no meeting with that id" in unknown.json()["errors"]["meeting_id"]


async def test_the_mp_dataset_finds_the_most_precise_match_and_refuses_a_broken_file(client, organiser):
    lookup = "/campaigns/api/mps/lookup"
    assert (await client.get(lookup, params={"postcode": "b15 2tt"}, headers=organiser)).json()["name"] == \
        "Birmingham Edgbaston"  # the sector B15 2 is more precise than the district B15
    assert (await client.get(lookup, params={"postcode": "B15 1AA"}, headers=organiser)).json()["name"] == \
        "Birmingham Ladywood"
    missing = await client.get(lookup, params={"postcode": "SW1A 1AA"}, headers=organiser)
    assert missing.status_code == 404 and "could not find a constituency" in missing.json()["detail"]

    broken = "postcode,constituency_code,constituency_name,mp_name,mp_party,mp_email\nB1,X,,Someone,,not-an-email\n"
    refused = await client.put("/campaigns/api/mps", content=broken, headers=organiser)
    assert refused.status_code == 422 and "line 2" in refused.json()["detail"]
    region = await client.put("/campaigns/api/mps", content=SAMPLE_MPS.read_bytes(),
                              headers=organiser_headers("region", "r-1"))
    assert region.status_code == 403
    loaded = await client.put("/campaigns/api/mps", content=SAMPLE_MPS.read_bytes(), headers=organiser)
    assert loaded.status_code == 200 and loaded.json()["constituencies"] >= 30
    # the broken file changed nothing
    assert (await client.get(lookup, params={"postcode": "B1 1AA"}, headers=organiser)).json()["mp_name"] == \
        "Amira Saleem"


async def test_a_letter_template_is_filled_for_the_writer(client, organiser):
    campaign = await launch(client, organiser, asks=[LETTER, PETITION])
    path = f"/campaigns/{campaign['id']}/asks/{ask_of(campaign, 'write_to_mp')['id']}"
    page = await client.post(path, data={"name": "Ada  Lovelace", "email": "ada@example.org", "postcode": "cv4 7al",
                                         "step": "find"})
    assert page.status_code == 200
    assert "Your MP is <strong>Priya Raman</strong>, MP for Coventry South" in page.text
    assert "Dear Priya Raman,\n\nAs your constituent in Coventry South I ask you to act." in page.text
    assert "Ada Lovelace, CV4 7AL</textarea>" in page.text
