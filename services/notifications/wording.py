"""The wording of emails: what organisers can edit (the network's name, the sender's name, the sign-off, the
digest's opening line, the confirmations' subjects and words, follow-up steps with `{placeholders}`), and how
digests put figures and dates into words.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
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


def one_line(text: str) -> str:
    """A subject line: runs of white space (line breaks included) as one space, none at either end."""
    return " ".join(text.split())


@dataclass(frozen=True)
class Autoresponder:
    """An email sent in answer to something a person did, whose subject and words organisers edit (stored as
    `<kind>_subject` and `<kind>_body`); the rest of it (greeting, what they did, sign-off, footer) is fixed."""

    kind: str
    heading: str
    subject: str
    body: str
    placeholders: tuple[str, ...]


AUTORESPONDERS = (
    Autoresponder(
        "welcome",
        "Welcome, when someone joins",
        "Welcome to {network_name}, {first_name}",
        "Welcome to {network_name}! Thank you for joining us.\n\nTogether we can make change happen. The best way "
        "to start is to meet the people near you.",
        ("first_name", "network_name", "group_name"),
    ),
    Autoresponder(
        "petition_signed",
        "Petition signed",
        "Thank you for signing: {campaign_title}",
        "Thank you for signing the petition for {campaign_title}. Your signature is counted.\n\nPetitions work when "
        "many people sign: please ask a friend to sign too.",
        ("first_name", "network_name", "campaign_title"),
    ),
    Autoresponder(
        "pledge_received",
        "Pledge received",
        "We have your pledge: {campaign_title}",
        "Thank you for your pledge for {campaign_title}. It is counted now; an organiser reads it before it is shown "
        "on the campaign's page.",
        ("first_name", "network_name", "campaign_title"),
    ),
    Autoresponder(
        "pledge_published",
        "Pledge published",
        "Your pledge is on the page: {campaign_title}",
        "Your pledge for {campaign_title} is now on the campaign's page for everyone to see. Thank you for standing "
        "up to be counted.",
        ("first_name", "network_name", "campaign_title"),
    ),
    Autoresponder(
        "mp_letter_copy",
        "Letter sent to an MP (the writer's copy)",
        "Your letter to {mp_name}",
        "Thank you for writing to {mp_name}, MP for {constituency}. Your letter is on its way; this is a copy of it. "
        "Any reply will come straight to you.",
        ("first_name", "network_name", "mp_name", "constituency", "campaign_title"),
    ),
)
AUTORESPONDER_KINDS = {a.kind: a for a in AUTORESPONDERS}
# How long a process keeps the wording it read before reading it again (a save in the same process is seen at
# once; another instance's within this).
WORDING_TTL_S = 5.0


def paragraph_lines(text: str) -> list[list[str]]:
    """Text someone wrote as paragraphs (split on blank lines) of lines, exactly as they broke them: an HTML part
    shows each paragraph as one <p>, its line breaks as <br>."""
    return [[line.rstrip() for line in p.split("\n")] for p in paragraphs(text)]


def as_written(text: str) -> str:
    """Text someone wrote, for a plain-text part: their line breaks and blank lines, no trailing spaces."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip("\n").split("\n"))


class EmailSettings:
    """The network's name, the sender's name, the sign-off, digest wording and the confirmations' wording,
    editable on the organiser pages.

    Stored as key/value rows; a key nobody has edited falls back to its default.
    """

    LABELS = {
        "network_name": "Network name",
        "sender_name": "Sender's name (shown as who the email is from)",
        "sign_off": "Sign-off at the end of emails",
        "digest_intro": "Opening line of organisers' digests",
        **{
            key: label
            for a in AUTORESPONDERS
            for key, label in ((f"{a.kind}_subject", "Subject"), (f"{a.kind}_body", "Words"))
        },
    }

    def __init__(self, network_name: str) -> None:
        self.defaults = {
            "network_name": network_name,
            "sender_name": network_name,
            "sign_off": "With thanks,\n{network_name}",
            "digest_intro": "Here is what happened in {scope_name} since your last digest, and what is coming up.",
            **{f"{a.kind}_subject": a.subject for a in AUTORESPONDERS},
            **{f"{a.kind}_body": a.body for a in AUTORESPONDERS},
        }
        self._cached: tuple[float, dict[str, str]] | None = None

    async def load(self, session: AsyncSession) -> dict[str, str]:
        s = tables.email_settings
        stored = {r.key: r.value for r in (await session.execute(select(s.c.key, s.c.value))).all()}
        values = {k: stored.get(k) or v for k, v in self.defaults.items()}
        self._cached = (time.monotonic(), values)
        return values

    async def current(self, session: AsyncSession) -> dict[str, str]:
        """`load`, read again at most every WORDING_TTL_S: emails queued in a run (a welcome each) share it."""
        return self.cached() or await self.load(session)

    def cached(self) -> dict[str, str] | None:
        """The wording read less than WORDING_TTL_S ago, if any."""
        if self._cached is not None and time.monotonic() - self._cached[0] < WORDING_TTL_S:
            return self._cached[1]
        return None

    def forget(self) -> None:
        """Read the wording afresh next time (called once a save has committed)."""
        self._cached = None

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
        self._cached = None


def sign_off_lines(wording: dict[str, str]) -> list[str]:
    """The sign-off as the emails end with it, its `{network_name}` filled in."""
    return fill(wording["sign_off"], {"network_name": wording["network_name"]}).splitlines()


def autoresponder_text(wording: dict[str, str], kind: str, values: dict[str, str]) -> tuple[str, list[str]]:
    """(subject, paragraphs) of autoresponder `kind` in the organisers' wording, its placeholders filled in."""
    values = {"network_name": wording["network_name"], **values}
    subject = one_line(fill(wording[f"{kind}_subject"], values))
    return subject, paragraphs(fill(wording[f"{kind}_body"], values))


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

