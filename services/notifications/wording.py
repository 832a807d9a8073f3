"""The wording of emails: what organisers can edit (the network's name, the sign-off, the digest's opening
line, follow-up steps with `{placeholders}`), and how digests put figures and dates into words.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.digest_schedule import NETWORK_TZ

# What organisers can edit in emails ----------------------------------------------------------------------

PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")


def fill(template: str, values: dict[str, str]) -> str:
    """Replace the known `{placeholders}` of organiser-written wording; anything else is left as typed."""
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def paragraphs(body: str) -> list[str]:
    """Organiser-written plain text as paragraphs (split on blank lines)."""
    return [p.strip() for p in re.split(r"\n\s*\n", body.replace("\r\n", "\n")) if p.strip()]


class EmailSettings:
    """The network's name, the sender's name, the sign-off and digest wording, editable on the organiser pages.

    Stored as key/value rows; a key nobody has edited falls back to its default.
    """

    LABELS = {
        "network_name": "Network name",
        "sender_name": "Sender's name (shown as who the email is from)",
        "sign_off": "Sign-off at the end of emails",
        "digest_intro": "Opening line of organisers' digests",
    }

    def __init__(self, network_name: str) -> None:
        self.defaults = {
            "network_name": network_name,
            "sender_name": network_name,
            "sign_off": "With thanks,\n{network_name}",
            "digest_intro": "Here is what happened in {scope_name} since your last digest, and what is coming up.",
        }

    async def load(self, session: AsyncSession) -> dict[str, str]:
        s = tables.email_settings
        stored = {r.key: r.value for r in (await session.execute(select(s.c.key, s.c.value))).all()}
        return {k: stored.get(k) or v for k, v in self.defaults.items()}

    async def save(self, session: AsyncSession, values: dict[str, str], updated_by: str | None) -> None:
        s = tables.email_settings
        for key, value in values.items():
            if key not in self.defaults:
                continue
            value = value.strip()
            await session.execute(
                pg_insert(s)
                .values(key=key, value=value, updated_by=updated_by)
                .on_conflict_do_update(
                    index_elements=[s.c.key],
                    set_={"value": value, "updated_by": updated_by, "updated_at": datetime.now(UTC)},
                )
            )


# Digests' figures and dates in words ----------------------------------------------------------------------


def unit_summary(new_members: int, actions: int, meetings: list[str], campaigns: list[str]) -> str:
    """One line of what a group or region did, e.g. "2 new members; 9 actions; meetings: Street stall"."""
    parts = []
    if new_members:
        parts.append(f"{new_members} new member{'s' if new_members != 1 else ''}")
    if actions:
        parts.append(f"{actions} action{'s' if actions != 1 else ''}")
    if meetings:
        parts.append("meetings: " + ", ".join(meetings))
    if campaigns:
        parts.append("new campaigns: " + ", ".join(campaigns))
    return "; ".join(parts)


def level_label(level: str) -> str:
    return level.replace("_", " ").replace("-", " ").capitalize() if level else "Not chosen yet"


def format_when(starts_at: str | datetime, timezone: str = "Europe/London") -> str:
    at = datetime.fromisoformat(starts_at) if isinstance(starts_at, str) else starts_at
    try:
        local = at.astimezone(ZoneInfo(timezone))
    except (KeyError, ValueError):
        local = at.astimezone(NETWORK_TZ)
    return f"{local:%a} {local.day} {local:%b}, {local:%H:%M}"


def format_day(at: datetime) -> str:
    local = at.astimezone(NETWORK_TZ)
    return f"{local:%A} {local.day} {local:%B}"

