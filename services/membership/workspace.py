"""The organisers' home (`/admin`): what an organiser looks after and what needs them, from all four services.

Membership counts the week's new members itself. Events (this week's meetings, with RSVPs) and campaigns (pledges
to moderate) each answer a small JSON endpoint, asked through the gateway with the organiser's own session, so each
service still decides what that organiser may see. Network organisers, who also run the system, see the dead
letters waiting for an operator. A part that does not answer in time is shown as not available, never as an error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from services.membership.roster import Roster
from shared import auth
from shared.deadletters import dead_letter_counts

log = structlog.get_logger(__name__)
PART_TIMEOUT_S = 3.0
NEW_MEMBERS_DAYS = 7


@dataclass
class HomeParts:
    new_members: int
    meetings: list[dict[str, Any]] | None = None  # None: events did not answer
    campaigns: dict[str, Any] | None = None  # None: campaigns did not answer
    dead_letters: dict[str, int] | None = None  # None: not an operator, or Kafka did not answer
    unavailable: list[str] = field(default_factory=list)


class OrganiserHome:
    def __init__(self, roster: Roster, *, gateway_url: str, kafka_bootstrap: str) -> None:
        self.roster = roster
        self.gateway_url = gateway_url.rstrip("/")
        self.kafka_bootstrap = kafka_bootstrap

    async def parts(self, who: auth.OrganiserScope, session_token: str) -> HomeParts:
        since = datetime.now(UTC) - timedelta(days=NEW_MEMBERS_DAYS)
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=PART_TIMEOUT_S,
                                     headers={"Authorization": f"Bearer {session_token}"}) as client:
            new_members, meetings, campaigns, dead = await asyncio.gather(
                self.roster.joined_since(who, since),
                self._ask(client, "/events/organise/home.json"),
                self._ask(client, "/campaigns/organise/home.json"),
                self._dead_letters() if who.is_network else _nothing(),
            )
        home = HomeParts(new_members, (meetings or {}).get("meetings") if meetings else None, campaigns, dead)
        home.unavailable = [name for name, part in (("meetings", meetings), ("campaigns", campaigns)) if part is None]
        return home

    async def _ask(self, client: httpx.AsyncClient, path: str) -> dict[str, Any] | None:
        try:
            answer = await client.get(path)
            answer.raise_for_status()
            body = answer.json()
            return body if isinstance(body, dict) else None
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("organiser_home_part_unavailable", path=path, error=type(exc).__name__)
            return None

    async def _dead_letters(self) -> dict[str, int] | None:
        try:
            return await asyncio.wait_for(dead_letter_counts(self.kafka_bootstrap), PART_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the home still shows the rest when Kafka does not answer
            log.warning("organiser_home_dead_letters_unavailable", error=type(exc).__name__)
            return None


async def _nothing() -> None:
    return None
