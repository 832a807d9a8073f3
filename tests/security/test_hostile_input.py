"""Nothing answers 500 at the edge (#18): NUL bytes and other control characters anywhere a client can put
text, and numbers beyond what a list can page to, get a clear 4xx from every service through the gateway, and
nothing is stored."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

Case = tuple[str, str, dict[str, Any], str]  # method, path, keyword arguments of the request, who calls
NUL_JOIN = {"name": "Ada\x00Lovelace", "postcode": "B1 1AA", "email_consent": "yes"}
MEETING = str(uuid.uuid4())
CAMPAIGN, ASK = str(uuid.uuid4()), str(uuid.uuid4())
TOO_FAR = "99999999999999999999"

CONTROL_CHARACTERS: list[Case] = [
    ("GET", "/events?region=%00", {}, "anyone"),
    ("GET", "/join?source=a%01b", {}, "anyone"),
    ("GET", "/campaigns?x=%7f", {}, "anyone"),
    ("GET", "/notifications/organise/deliveries?status=%00", {}, "organiser"),
    ("POST", "/join", {"data": NUL_JOIN}, "anyone"),
    ("POST", f"/events/{MEETING}/rsvp", {"data": {"name": "Ada\x00", "email": "ada@example.org"}}, "anyone"),
    ("POST", f"/campaigns/{CAMPAIGN}/asks/{ASK}", {"data": {"name": "x\x1b[2J", "email": "a@example.org"}}, "anyone"),
    ("POST", "/notifications/organise/emails", {"data": {"subject": "Hi\x00", "body": "x"}}, "organiser"),
    ("POST", "/api/v2/people", {"json": {"given_name": "A\x00", "email_addresses": [{"address": "a@b.org"}]}},
     "membership key"),
    ("POST", "/api/v2/tags", {"json": {"name": "\x00"}}, "membership key"),
    ("POST", "/api/v2/person_signup_helper", {"json": {"person": {"family_name": {"nested": "\x07"}}}},
     "membership key"),
]

TOO_FAR_TO_PAGE: list[Case] = [
    ("GET", f"/api/v2/people?page={TOO_FAR}", {}, "membership key"),
    ("GET", "/api/v2/people?page=1e30", {}, "membership key"),
    ("GET", f"/api/v2/tags?page={TOO_FAR}", {}, "membership key"),
    ("GET", f"/api/v2/events?page={TOO_FAR}", {}, "integration key"),
    ("GET", f"/api/v2/petitions?page={TOO_FAR}", {}, "integration key"),
    ("GET", "/api/v2/petitions?page=1e30", {}, "integration key"),
    ("GET", "/campaigns/organise/long-tail?days=999999999", {}, "organiser"),
    ("GET", "/campaigns/organise/long-tail.csv?days=999999999", {}, "organiser"),
    ("GET", "/campaigns/api/engagement/long-tail?joined_days_ago=999999999", {}, "organiser"),
]

# Organiser pages show the last page there is instead: no error, and certainly no 500.
CLAMPED: list[Case] = [
    ("GET", f"/members?page={TOO_FAR}", {}, "organiser"),
    ("GET", f"/notifications/organise/deliveries?page={TOO_FAR}", {}, "organiser"),
    ("GET", f"/dashboard/export/growth.csv?weeks={TOO_FAR}", {}, "organiser"),
]


@pytest.fixture
def callers(network_organiser: dict[str, str], membership_key: dict[str, str],
            integration_key: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"anyone": {}, "organiser": network_organiser, "membership key": membership_key,
            "integration key": integration_key}


def _id(case: Case) -> str:
    return f"{case[0]} {case[1].split('?')[0]}"


async def _send(gateway: httpx.AsyncClient, callers: dict[str, dict[str, str]], case: Case) -> httpx.Response:
    method, path, kwargs, who = case
    return await gateway.request(method, path, headers=callers[who], **kwargs)


@pytest.mark.parametrize("case", CONTROL_CHARACTERS, ids=_id)
async def test_control_characters_anywhere_are_refused_with_a_clear_400(
    gateway: httpx.AsyncClient, callers: dict[str, dict[str, str]], case: Case
) -> None:
    response = await _send(gateway, callers, case)
    assert response.status_code == 400, response.text
    assert "control character" in response.json()["detail"]


@pytest.mark.parametrize("case", TOO_FAR_TO_PAGE, ids=_id)
async def test_numbers_beyond_any_page_are_refused_not_sent_to_the_database(
    gateway: httpx.AsyncClient, callers: dict[str, dict[str, str]], case: Case
) -> None:
    response = await _send(gateway, callers, case)
    assert response.status_code in (400, 422), response.text


@pytest.mark.parametrize("case", CLAMPED, ids=_id)
async def test_organiser_pages_far_beyond_the_end_answer_normally(
    gateway: httpx.AsyncClient, callers: dict[str, dict[str, str]], case: Case
) -> None:
    response = await _send(gateway, callers, case)
    assert response.status_code == 200, response.text


async def test_a_join_with_a_nul_in_the_name_stores_nothing(
    gateway: httpx.AsyncClient, membership_db: asyncpg.Connection
) -> None:
    email = f"nul-{uuid.uuid4().hex[:12]}@example.org"
    response = await gateway.post("/join", data={**NUL_JOIN, "email": email})
    assert response.status_code == 400
    assert await membership_db.fetchval("SELECT count(*) FROM members WHERE email_normalised = $1", email) == 0


async def test_ordinary_text_with_new_lines_and_tabs_still_passes(gateway: httpx.AsyncClient) -> None:
    email = f"lines-{uuid.uuid4().hex[:12]}@example.org"
    response = await gateway.post("/join", data={"name": "Ada Lovelace", "email": email, "postcode": "B1 1AA",
                                                 "email_consent": "yes", "skills": "Design\r\nFacilitation\tand more"})
    assert response.status_code in (200, 303), response.text
