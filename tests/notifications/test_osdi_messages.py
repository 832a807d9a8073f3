"""Mailings over the OSDI API as Action Network serves `messages`, against the running system: subject, targets
and statistics in aggregate (sent, clicked, bounced, unsubscribed; opened is null: there is no pixel), HAL links and
paging like the other OSDI collections, the same key rules; a key sees only the mailings within its scope and
another's is not found."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from deploy.local import launcher
from shared.auth import OrganiserScope, issue
from tests.notifications.test_mailings import (  # noqa: F401
    BASE,
    add_members,
    create,
    people,
    region_organiser,
    wait_until,
)

HAL = "application/hal+json"


def key_of(scope_type: str = "network", scope_id: str | None = None) -> dict[str, str]:
    scope = OrganiserScope(f"key-{uuid.uuid4().hex[:6]}", scope_type, scope_id)
    return {"OSDI-API-Token": issue(launcher.secret_key(), scope, "osdi-api")}


async def test_a_sent_mailing_is_a_message_with_its_statistics_to_keys_of_its_scope_only(
    gateway,
    mail,
    notifications_db,
    people,  # noqa: F811
):
    region = str(uuid.uuid4())
    members = await add_members(notifications_db, people, 2, region=region, interests=[], tag="osdi")
    headers, _ = await region_organiser(notifications_db, people, region)
    subject = f"OSDI news {uuid.uuid4().hex[:6]}"
    mailing_id = await create(gateway, headers, {"subject": subject, "body": "Read [this](https://example.org/osdi)"})
    sent = await gateway.post(f"{BASE}/{mailing_id}/send", headers=headers, data={"when": "now"})
    assert sent.status_code == 303, sent.text
    [message] = await mail.wait_for(members[0][1])
    [link] = re.findall(r"https?://[^\s<>]*/notifications/r/[^\s<>]+", message["text"])[:1]
    assert (await gateway.get(urlsplit(link).path)).status_code == 302
    await mail.wait_for(members[1][1])

    async def both_sent():
        got = await gateway.get(f"/api/v2/messages/{mailing_id}", headers=key_of("region", region))
        return got if got.status_code == 200 and got.json()["statistics"]["sent"] == 2 else None

    got = await wait_until(both_sent, "the message's statistics to count two sent")
    assert got.headers["content-type"].startswith(HAL)
    body = got.json()
    assert body["identifiers"] == [f"groundswell:{mailing_id}", f"action_network:{mailing_id}"]
    assert body["subject"] == subject and body["status"] == "sent" and body["total_targeted"] == 2
    assert body["statistics"] == {"sent": 2, "opened": None, "clicked": 1, "bounced": 0, "unsubscribed": 0}
    assert body["targets"] == [{"name": "Everyone in the region"}]
    assert body["_links"]["self"]["href"].endswith(f"/api/v2/messages/{mailing_id}")
    assert members[0][1] not in got.text  # no recipient is listed
    # Found by Action Network's prefixed id too; in the region key's collection; to the network's key as well.
    prefixed = await gateway.get(f"/api/v2/messages/action_network:{mailing_id}", headers=key_of("region", region))
    assert prefixed.status_code == 200
    listed = await gateway.get("/api/v2/messages", params={"per_page": 1}, headers=key_of("region", region))
    page = listed.json()
    assert listed.status_code == 200 and page["per_page"] == 1 and page["total_records"] == 1
    assert [m["subject"] for m in page["_embedded"]["osdi:messages"]] == [subject]
    network = await gateway.get(f"/api/v2/messages/{mailing_id}", headers=key_of())
    assert network.status_code == 200

    # Another region's key: not found, and not in its collection.
    stranger = key_of("region", str(uuid.uuid4()))
    hidden = await gateway.get(f"/api/v2/messages/{mailing_id}", headers=stranger)
    assert hidden.status_code == 404 and hidden.json() == {"error": hidden.json()["error"]}
    assert hidden.headers["content-type"].startswith(HAL) and subject not in hidden.text
    theirs = await gateway.get("/api/v2/messages", headers=stranger)
    assert theirs.status_code == 200 and subject not in theirs.text and theirs.json()["total_records"] == 0


async def test_messages_need_a_valid_key_and_page_like_every_osdi_collection(gateway):
    assert (await gateway.get("/api/v2/messages")).status_code == 401
    forged = await gateway.get("/api/v2/messages", headers={"OSDI-API-Token": "nonsense"})
    assert forged.status_code == 401 and "error" in forged.json()
    bad_page = await gateway.get("/api/v2/messages", params={"page": "0"}, headers=key_of())
    assert bad_page.status_code == 422 and "error" in bad_page.json()
    capped = await gateway.get("/api/v2/messages", params={"per_page": "500"}, headers=key_of())
    assert capped.status_code == 200 and capped.json()["per_page"] == 25
