"""Test people: unique, recognisable addresses so tests never see each other's mail."""

from __future__ import annotations

import uuid


def unique_email(prefix: str = "member") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.org"
