"""Test people: unique, recognisable addresses so tests never see each other's mail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from shared.crypto import new_key, seal
from shared.events.catalog import MemberJoined


def unique_email(prefix: str = "member") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.org"


def member_joined(
    member_id: str, *, key: bytes | None = None, email: str = "someone@example.org", name: str = "Someone",
    **overrides: Any,
) -> MemberJoined:
    """A MemberJoined as membership publishes it: email and name sealed with the member's key (`key`, or a new
    one), a confirmed-consent join from the join form unless `overrides` say otherwise."""
    key = key or new_key()
    fields: dict[str, Any] = dict(
        member_id=member_id,
        email=seal(email, key, key_id=member_id, owner="membership"),
        name=seal(name, key, key_id=member_id, owner="membership"),
        region_id=None,
        group_ids=[],
        engagement_level="informed",
        email_consent=True,
        consent_wording_version="v1",
        source="join-form",
        confirmation_required=True,
        joined_at=datetime.now(UTC),
    )
    fields.update(overrides)
    return MemberJoined(**fields)
