"""A service's answer to MemberDataRequested (a member's data download, gathered by membership): its part as a JSON
document sealed with the member's key, the service's copy of it; no part, and a note why, when it holds no key."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.crypto import KeyStore, seal
from shared.events.catalog import CampaignsDataOfMember, EventsDataOfMember, NotificationsDataOfMember

MEMBER_KEY_OWNER = "membership"
PartEvent = type[EventsDataOfMember] | type[CampaignsDataOfMember] | type[NotificationsDataOfMember]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def answer(
    session: AsyncSession, member_keys: KeyStore, model: PartEvent, request_id: str, member_id: str,
    part: dict[str, Any],
) -> EventsDataOfMember | CampaignsDataOfMember | NotificationsDataOfMember:
    """The part event: `part` sealed with this service's copy of the member's key."""
    key = await member_keys.get(session, member_id)
    if key is None:
        return model(request_id=request_id, member_id=member_id,
                     note="this service does not hold your key (yet), so it could not send its part safely")
    document = json.dumps(part, default=_plain, ensure_ascii=False)
    return model(request_id=request_id, member_id=member_id,
                 part=seal(document, key, key_id=member_id, owner=MEMBER_KEY_OWNER))
