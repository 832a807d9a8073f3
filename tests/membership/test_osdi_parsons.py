"""An organisation's Action Network sync, run unmodified with parsons' `ActionNetwork` connector against the
running system's gateway: only the API's URL changes (docs/api.md). People, tags and taggings (membership), events
and attendances (events), petitions and signatures (campaigns)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from parsons import ActionNetwork
from parsons.action_network import action_network as parsons_an

from deploy.local import launcher
from shared.auth import OrganiserScope, issue
from tests.membership.conftest import make_organiser, unique_email


@pytest.fixture
async def an(gateway, membership_db, monkeypatch) -> ActionNetwork:
    """parsons pointed at the gateway, with a network-wide key made as an organiser makes one."""
    _, headers = await make_organiser(membership_db)
    created = await gateway.post(
        "/organisers/api-keys",
        headers=headers,
        data={"name": f"parsons {uuid.uuid4().hex[:6]}", "scope_type": "network"},
    )
    assert created.status_code == 201, created.text
    key = created.text.split('<code id="new-api-key">')[1].split("</code>")[0]
    monkeypatch.setattr(parsons_an, "API_URL", f"{launcher.GATEWAY_URL}/api/v2")  # the one change
    return ActionNetwork(api_token=key)


def an_id(resource: dict) -> str:
    """The id as parsons reads it (upsert_person and add_tag keep the `action_network:` identifier)."""
    [found] = [i.split(":")[1] for i in resource["identifiers"] if "action_network:" in i]
    return found


async def test_upsert_person_adds_then_updates_by_email_and_a_partial_upsert_keeps_the_rest(an):
    email = unique_email("parsons")
    added = await asyncio.to_thread(
        an.upsert_person,
        email,
        given_name="Anna Maria",
        family_name="van der Berg",
        mobile_number="07700 900123",
        tags=["parsons-sync"],
        employer="Co-op",
    )
    person_id = an_id(added)
    assert (added["given_name"], added["family_name"]) == ("Anna Maria", "van der Berg")
    assert added["phone_numbers"][0]["number"] == "07700900123" and added["custom_fields"]["employer"] == "Co-op"

    again = await asyncio.to_thread(an.upsert_person, email, family_name="Berg")
    assert an_id(again) == person_id and (again["given_name"], again["family_name"]) == ("Anna Maria", "Berg")
    assert again["custom_fields"]["employer"] == "Co-op" and again["phone_numbers"]
    await asyncio.to_thread(an.update_person, person_id, given_name="Anne")
    read = await asyncio.to_thread(an.get_person, person_id)
    assert (read["given_name"], read["family_name"]) == ("Anne", "Berg")


async def test_get_people_filters_by_email_and_pages_an_incremental_sync_of_more_than_25(an):
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    emails = [unique_email("sync") for _ in range(27)]
    ids = set()
    for email in emails:
        ids.add(an_id(await asyncio.to_thread(an.upsert_person, email, given_name="Sync")))
    synced = await asyncio.to_thread(an.get_people, filter=f"created_date gt '{since}'")
    assert ids <= {an_id(p) for p in synced} and len(synced) >= 27  # parsons paged until an empty page
    [one] = await asyncio.to_thread(an.get_people, filter=f"email_address eq '{emails[3]}'")
    assert one["email_addresses"][0]["address"] == emails[3]
    first_page = await asyncio.to_thread(an.get_people, page=1, per_page=100, filter=f"created_date gt '{since}'")
    assert first_page["per_page"] == 25 and len(first_page["_embedded"]["osdi:people"]) == 25


async def test_tags_and_taggings_through_parsons(an):
    person_id = an_id(await asyncio.to_thread(an.upsert_person, unique_email("tagged")))
    tag_id = an_id(await asyncio.to_thread(an.add_tag, f"parsons-{uuid.uuid4().hex[:6]}"))
    payload = {"_links": {"osdi:person": {"href": f"https://actionnetwork.org/api/v2/people/{person_id}"}}}
    tagging = await asyncio.to_thread(an.create_tagging, tag_id, payload)
    taggings = await asyncio.to_thread(an.get_taggings, tag_id)
    assert [t["identifiers"] for t in taggings] == [tagging["identifiers"]]
    one = await asyncio.to_thread(an.get_tagging, tag_id, an_id(tagging))
    assert one["_links"]["osdi:person"]["href"].endswith(f"/people/{person_id}")
    assert tag_id in {an_id(t) for t in await asyncio.to_thread(an.get_tags)}
    # every tagging's `_links.self` is readable (parsons follows it as Action Network's clients do)
    own = await asyncio.to_thread(an.api.get_request, one["_links"]["self"]["href"])
    assert own["identifiers"] == tagging["identifiers"]
    await asyncio.to_thread(an.delete_tagging, tag_id, an_id(tagging))
    assert len(await asyncio.to_thread(an.get_taggings, tag_id)) == 0


def person_link(person_id: str) -> dict:
    """Action Network's way to name a person already known, in an attendance's or a signature's body."""
    return {"_links": {"osdi:person": {"href": f"https://actionnetwork.org/api/v2/people/{person_id}"}}}


async def test_events_and_attendances_through_parsons(an):
    title = f"Parsons assembly {uuid.uuid4().hex[:6]}"
    start = (datetime.now(UTC) + timedelta(days=9)).replace(hour=18, minute=0, second=0, microsecond=0, tzinfo=None)
    event = await asyncio.to_thread(an.create_event, title, start_date=start, location={
        "venue": "Friends Meeting House", "address_lines": ["Bull Street"], "locality": "Birmingham"})
    event_id = event["event_id"]
    assert event["title"] == title and an_id(event) == event_id
    await asyncio.to_thread(an.update_event, event_id, {"description": "Plan the spring campaign"})
    read = await asyncio.to_thread(an.get_event, event_id)
    assert read["description"] == "Plan the spring campaign" and read["title"] == title
    listed = await asyncio.to_thread(an.get_events, page=1, per_page=100)
    assert listed["per_page"] == 25

    person_id = an_id(await asyncio.to_thread(an.upsert_person, unique_email("attends"), given_name="Olu"))
    url = f"events/{event_id}/attendances"
    # parsons' create_attendance sends its payload as query parameters: the connector sends it as Action Network
    # documents it, in the body
    linked = await asyncio.to_thread(an.api.post_request, url, json=person_link(person_id))
    by_email = await asyncio.to_thread(an.api.post_request, url, json={
        "person": {"email_addresses": [{"address": unique_email("walk-up")}]}})
    assert linked["status"] == by_email["status"] == "accepted"
    attendances = await asyncio.to_thread(an.get_event_attendances, event_id)
    assert {an_id(a) for a in attendances} == {an_id(linked), an_id(by_email)}
    one = await asyncio.to_thread(an.get_event_attendance, event_id, an_id(linked))
    assert one["_links"]["osdi:person"]["href"].endswith(f"/people/{person_id}")
    [theirs] = await asyncio.to_thread(an.get_person_attendances, person_id)
    assert an_id(theirs) == an_id(linked)
    again = await asyncio.to_thread(an.get_person_attendance, person_id, an_id(linked))
    assert again["identifiers"] == linked["identifiers"]


async def test_petitions_and_signatures_through_parsons(an, gateway):
    organiser = {"Authorization": f"Bearer {issue(launcher.secret_key(), OrganiserScope('parsons-org', 'network'))}"}
    launched = await gateway.post("/campaigns/api/campaigns", headers=organiser, json={
        "title": f"Parsons petition campaign {uuid.uuid4().hex[:6]}", "goal": "Equal care", "summary": "Sign it.",
        "asks": [{"kind": "petition", "title": "Sign the petition", "body": "Publish the data.",
                  "addressee": "The Secretary of State"}]})
    assert launched.status_code == 201, launched.text
    petition_id = launched.json()["asks"][0]["id"]
    petition = await asyncio.to_thread(an.get_petition, petition_id)
    assert an_id(petition) == petition_id and petition["target"] == [{"name": "The Secretary of State"}]

    person_id = an_id(await asyncio.to_thread(an.upsert_person, unique_email("signs"), given_name="Mary"))
    url = f"petitions/{petition_id}/signatures"
    linked = await asyncio.to_thread(an.api.post_request, url, json={**person_link(person_id), "comments": "Yes."})
    by_email = await asyncio.to_thread(an.api.post_request, url, json={
        "person": {"email_addresses": [{"address": unique_email("signer")}]}})
    signatures = await asyncio.to_thread(an.get_petition_signatures, petition_id)
    assert {an_id(s) for s in signatures} == {an_id(linked), an_id(by_email)}
    one = await asyncio.to_thread(an.get_petition_signature, petition_id, an_id(linked))
    assert one["comments"] == "Yes." and one["_links"]["osdi:person"]["href"].endswith(f"/people/{person_id}")
    [theirs] = await asyncio.to_thread(an.get_person_signatures, person_id)
    assert an_id(theirs) == an_id(linked)
    assert (await asyncio.to_thread(an.get_person_signature, person_id, an_id(linked)))["comments"] == "Yes."
    assert (await asyncio.to_thread(an.get_petition, petition_id))["total_signatures"] == 2
