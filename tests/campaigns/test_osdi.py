"""OSDI as Action Network serves it: petitions, signatures and the record signature helper (HAL+JSON)."""

from __future__ import annotations

import uuid

from shared.auth import OrganiserScope, issue
from tests.campaigns.conftest import PETITION, SECRET, ask_of, launch, of_type

HAL = "application/hal+json"


def api_headers() -> dict[str, str]:
    return {"OSDI-API-Token": issue(SECRET, OrganiserScope("integration", "network"), "osdi-api")}


def person(email: str, **extra) -> dict:
    return {"person": {"given_name": "Mary", "family_name": "Seacole", "email_addresses": [{"address": email}],
                       **extra}}


async def test_petitions_page_in_hal_with_links(client, organiser):
    for _ in range(2):
        await launch(client, organiser, asks=[PETITION])
    headers = api_headers()
    first = await client.get("/api/v2/petitions", params={"per_page": 1}, headers=headers)
    assert first.status_code == 200 and first.headers["content-type"] == HAL
    body = first.json()
    assert body["per_page"] == 1 and body["page"] == 1 and body["total_records"] >= 2
    assert body["total_pages"] == body["total_records"] and "next" in body["_links"]
    petition = body["_embedded"]["osdi:petitions"][0]
    assert set(petition) >= {"identifiers", "title", "petition_text", "target", "total_signatures", "browser_url",
                             "_links"}
    assert petition["_links"]["osdi:signatures"]["href"].endswith("/signatures")
    second = (await client.get(body["_links"]["next"]["href"], headers=headers)).json()
    assert second["page"] == 2 and "previous" in second["_links"]
    too_many = await client.get("/api/v2/petitions", params={"per_page": 26}, headers=headers)
    assert too_many.status_code == 200 and too_many.json()["per_page"] == 25  # capped, as Action Network does
    assert (await client.get("/api/v2/petitions")).status_code == 401
    wrong = await client.get("/api/v2/petitions", headers={"OSDI-API-Token": "nonsense"})
    assert wrong.status_code == 401


async def test_the_record_signature_helper_signs_once_and_signatures_are_listed(client, organiser, kafka):
    campaign = await launch(client, organiser, asks=[PETITION])
    petition = ask_of(campaign, "petition")
    headers = api_headers()
    email = f"osdi-{uuid.uuid4().hex[:8]}@example.org"
    url = f"/api/v2/petitions/{petition['id']}/signatures"
    created = await client.post(url, headers=headers, json={**person(email), "comments": "Remember her."})
    assert created.status_code == 201 and created.headers["content-type"] == HAL
    signature = created.json()
    assert signature["comments"] == "Remember her." and signature["_links"]["osdi:petition"]["href"].endswith(
        f"/petitions/{petition['id']}")
    again = await client.post(url, headers=headers, json=person(email.upper()))
    assert again.status_code == 200 and again.json()["identifiers"] == signature["identifiers"]
    joining = await client.post(url, headers=headers, json=person(
        f"osdi-{uuid.uuid4().hex[:8]}@example.org", postal_addresses=[{"postal_code": "LE1 1AA"}]))
    assert joining.status_code == 201
    taken = await kafka.wait_for(of_type("ActionTaken", ask_id=petition["id"]), count=2)
    assert sorted(e.data["join_network"] for e in taken) == [False, True]
    listed = (await client.get(url, headers=headers)).json()
    assert listed["total_records"] == 2 and len(listed["_embedded"]["osdi:signatures"]) == 2
    one = await client.get(f"{url}/{signature['identifiers'][0].split(':', 1)[1]}", headers=headers)
    assert one.status_code == 200 and one.json()["comments"] == "Remember her."
    got = (await client.get(f"/api/v2/petitions/{petition['id']}", headers=headers)).json()
    assert got["total_signatures"] == 2 and got["target"] == [{"name": "The Secretary of State for Health"}]
    bad = await client.post(url, headers=headers, json={"person": {"given_name": "No", "email_addresses": []}})
    assert bad.status_code == 400 and "Enter your email address" in bad.json()["error"]
    assert (await client.get("/api/v2/petitions/nope", headers=headers)).status_code == 404


async def test_a_closed_petition_refuses_signatures_through_the_api(client, organiser):
    campaign = await launch(client, organiser, asks=[PETITION])
    await client.post(f"/campaigns/api/campaigns/{campaign['id']}/close", headers=organiser)
    petition = ask_of(campaign, "petition")
    refused = await client.post(f"/api/v2/petitions/{petition['id']}/signatures", headers=api_headers(),
                                json=person("closed@example.org"))
    assert refused.status_code == 409 and "closed" in refused.json()["error"]
    got = (await client.get(f"/api/v2/petitions/{petition['id']}", headers=api_headers())).json()
    assert got["total_signatures"] == 0 and got["groundswell:status"] == "closed"


def key_of(scope_type: str = "network", scope_id: str | None = None) -> dict[str, str]:
    return {"OSDI-API-Token": issue(SECRET, OrganiserScope(f"key-{uuid.uuid4().hex[:6]}", scope_type, scope_id),
                                    "osdi-api")}


def bare(resource: dict) -> str:
    """A resource's id as Action Network's clients read it (parsons keeps the `action_network:` identifier)."""
    return next(i for i in resource["identifiers"] if i.startswith("action_network:")).split(":", 1)[1]


async def test_the_helper_takes_a_person_with_only_an_email_address(client, organiser, db):
    petition = ask_of(await launch(client, organiser, asks=[PETITION]), "petition")
    email = f"only-{uuid.uuid4().hex[:8]}@example.org"
    signed = await client.post(f"/api/v2/petitions/action_network:{petition['id']}/signatures", headers=api_headers(),
                               json={"person": {"email_addresses": [{"address": email}]}})
    assert signed.status_code == 201, signed.text
    assert signed.json()["identifiers"][0] == f"groundswell:{bare(signed.json())}"
    assert await db.fetchval("SELECT name FROM actions WHERE email = $1", email) is None


async def test_a_persons_signatures_are_those_on_petitions_the_key_covers(client, organiser, db):
    member = str(uuid.uuid4())
    network_petition = ask_of(await launch(client, organiser, asks=[PETITION]), "petition")
    region_petition = ask_of(await launch(client, organiser, asks=[PETITION], scope_type="region",
                                          scope_id="region-east"), "petition")
    link = {"_links": {"osdi:person": {"href": f"https://example.org/api/v2/people/{member}"}}}
    for petition in (network_petition, region_petition):
        made = await client.post(f"/api/v2/petitions/{petition['id']}/signatures", headers=api_headers(), json=link)
        assert made.status_code == 201, made.text
    region_key = key_of("region", "region-east")
    everything = (await client.get(f"/api/v2/people/action_network:{member}/signatures", headers=api_headers())).json()
    assert everything["total_records"] == 2
    regional = (await client.get(f"/api/v2/people/{member}/signatures", headers=region_key)).json()
    signatures = regional["_embedded"]["osdi:signatures"]
    assert [s["_links"]["osdi:petition"]["href"].rsplit("/", 1)[1] for s in signatures] == [region_petition["id"]]
    one = await client.get(f"/api/v2/people/{member}/signatures/{bare(signatures[0])}", headers=region_key)
    assert one.status_code == 200 and one.json()["identifiers"] == signatures[0]["identifiers"]
    shown = one.json()["identifiers"]
    hidden = next(s for s in everything["_embedded"]["osdi:signatures"] if s["identifiers"] != shown)
    assert (await client.get(f"/api/v2/people/{member}/signatures/{bare(hidden)}",
                             headers=region_key)).status_code == 404
    # nor through the petition: the region's key neither reads the network petition's signatures nor adds to them
    url = f"/api/v2/petitions/{network_petition['id']}/signatures"
    assert (await client.get(url, headers=region_key)).status_code == 404
    refused = await client.post(url, headers=region_key, json=person(f"x-{uuid.uuid4().hex[:6]}@example.org"))
    assert refused.status_code == 404 and "error" in refused.json()
    assert await db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1", network_petition["id"]) == 1


async def test_wrong_shapes_and_numbers_are_clear_osdi_errors(client, organiser, db):
    petition = ask_of(await launch(client, organiser, asks=[PETITION]), "petition")
    url = f"/api/v2/petitions/{petition['id']}/signatures"
    for shape in ({"_links": "x"}, {"person": "me"}, {"person": {"email_addresses": "a@example.org"}}, {}, [1]):
        wrong = await client.post(url, headers=api_headers(), json=shape)
        assert wrong.status_code == 400 and wrong.headers["content-type"] == HAL and wrong.json()["error"], shape
    assert await db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1", petition["id"]) == 0
    for query in ("page=0", "page=x", "page=99999999999999999999", "per_page=-1"):
        answer = await client.get(f"{url}?{query}", headers=api_headers())
        assert answer.status_code == 422 and set(answer.json()) == {"error"}, query
    capped = await client.get(f"/api/v2/people/{uuid.uuid4()}/signatures?per_page=100", headers=api_headers())
    assert capped.status_code == 200 and capped.json()["per_page"] == 25
