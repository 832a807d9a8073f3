"""An organisation's Action Network sync, run unmodified with parsons' `ActionNetwork` connector against the
running system's gateway: only the API's URL changes (docs/api.md)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from parsons import ActionNetwork
from parsons.action_network import action_network as parsons_an

from deploy.local import launcher
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
