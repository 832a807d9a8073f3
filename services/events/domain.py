"""The events service's rules, with no I/O: what makes a meeting valid, who gets a place, when reminders fall due."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.contact import (
    MAX_NAME,
    UK_POSTCODE_RE,
    collapse_spaces,
    normalise_email,
    normalise_postcode,
    person_problems,
)
from shared.errors import InvalidInput

DEFAULT_TIMEZONE = "Europe/London"
DEFAULT_REMINDER_OFFSETS: tuple[int, ...] = (24 * 60, 60)  # minutes before the start
MAX_REMINDER_OFFSET = 60 * 24 * 30
KINDS: tuple[tuple[str, str], ...] = (("in_person", "In person"), ("online", "Online"), ("hybrid", "Hybrid"))
SCOPE_TYPES = ("network", "region", "group", "subteam")
MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_VENUE = 500
MAX_URL = 1000
MAX_GUESTS = 10
CHECK_IN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud at a venue

RsvpStatus = Literal["going", "waitlisted", "cancelled"]
AttendanceMethod = Literal["organiser", "self_check_in", "walk_in"]


class InvalidMeeting(InvalidInput):
    """A meeting that cannot be scheduled or changed as asked."""


class InvalidRsvp(InvalidInput):
    """An RSVP form that cannot be accepted."""


class RsvpRefused(Exception):
    """The meeting does not take RSVPs now (cancelled, past its deadline, already over)."""


class CheckInRefused(Exception):
    """A self check-in that does not match (wrong code, no such RSVP, meeting not on)."""


@dataclass(frozen=True)
class Speaker:
    name: str
    title: str | None = None
    session_title: str | None = None


@dataclass
class MeetingPlan:
    """A meeting as an organiser asked for it, validated: times in UTC, the zone kept for display."""

    title: str
    description: str
    kind: str
    scope_type: str
    scope_id: str | None
    starts_at: datetime
    ends_at: datetime
    timezone: str = DEFAULT_TIMEZONE
    venue: str | None = None
    online_url: str | None = None
    capacity: int | None = None
    rsvp_deadline: datetime | None = None
    campaign_id: str | None = None
    parent_meeting_id: str | None = None
    speakers: list[Speaker] = field(default_factory=list)
    reminder_offsets: list[int] = field(default_factory=lambda: list(DEFAULT_REMINDER_OFFSETS))

    def as_row(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            "kind": self.kind,
            "scope_type": self.scope_type,
            "scope_id": self.scope_id,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "timezone": self.timezone,
            "venue": self.venue,
            "online_url": self.online_url,
            "capacity": self.capacity,
            "rsvp_deadline": self.rsvp_deadline,
            "campaign_id": self.campaign_id,
            "parent_meeting_id": self.parent_meeting_id,
            "speakers": [s.__dict__ for s in self.speakers],
            "reminder_offsets": list(self.reminder_offsets),
        }


# Fields an update may change, in the order MeetingUpdated.changed lists them.
UPDATABLE_FIELDS = (
    "title",
    "description",
    "kind",
    "starts_at",
    "ends_at",
    "timezone",
    "venue",
    "online_url",
    "capacity",
    "rsvp_deadline",
    "campaign_id",
    "speakers",
    "reminder_offsets",
)


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def to_utc(value: Any, zone: ZoneInfo) -> datetime | None:
    """A datetime (or ISO string, as from `<input type=datetime-local>`) in UTC; naive means the meeting's zone."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("not a date and time") from None
    if not isinstance(value, datetime):
        raise ValueError("not a date and time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return int(str(value).strip())


def validate_meeting(raw: dict[str, Any], *, now: datetime, existing: MeetingPlan | None = None) -> MeetingPlan:
    """Check a meeting as typed (a new one, or `existing` with the fields in `raw` changed).

    Raises InvalidMeeting with every problem found, so a form can show them all at once.
    """
    base: dict[str, Any] = existing.as_row() if existing else {}
    merged = {**base, **raw}
    errors: dict[str, str] = {}

    title = collapse_spaces(merged.get("title"))
    if not title:
        errors["title"] = "Enter a title"
    elif len(title) > MAX_TITLE:
        errors["title"] = f"Title must be {MAX_TITLE} characters or fewer"
    description = str(merged.get("description") or "").strip()
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = f"Description must be {MAX_DESCRIPTION} characters or fewer"

    kind = merged.get("kind") or "in_person"
    if kind not in dict(KINDS):
        errors["kind"] = "Choose in person, online or hybrid"

    scope_type = merged.get("scope_type") or "network"
    scope_id = collapse_spaces(merged.get("scope_id")) or None
    if scope_type not in SCOPE_TYPES:
        errors["scope_type"] = "Choose who the meeting is for: the network, a region, a group or a sub-team"
    elif scope_type == "network":
        scope_id = None
    elif not scope_id:
        errors["scope_id"] = f"Choose the {scope_type} the meeting is for"

    tz_name = merged.get("timezone") or DEFAULT_TIMEZONE
    zone = _zone(tz_name)
    if zone is None:
        errors["timezone"] = "Choose a time zone such as Europe/London"
        zone = ZoneInfo(DEFAULT_TIMEZONE)

    def when(name: str, label: str, required: bool) -> datetime | None:
        try:
            value = to_utc(merged.get(name), zone)
        except ValueError:
            errors[name] = f"Enter the {label} as a date and time, like 2027-03-14 18:30"
            return None
        if value is None and required:
            errors[name] = f"Enter the {label}"
        return value

    starts_at = when("starts_at", "start", True)
    ends_at = when("ends_at", "end", True)
    rsvp_deadline = when("rsvp_deadline", "RSVP deadline", False)
    if starts_at and ends_at and ends_at <= starts_at:
        errors["ends_at"] = "The end must be after the start"
    if starts_at and existing is None and starts_at < now - timedelta(minutes=5):
        errors["starts_at"] = "The start must be in the future"
    if rsvp_deadline and ends_at and rsvp_deadline > ends_at:
        errors["rsvp_deadline"] = "The RSVP deadline must be before the meeting ends"

    venue = collapse_spaces(merged.get("venue")) or None
    online_url = str(merged.get("online_url") or "").strip() or None
    if kind in ("in_person", "hybrid") and not venue:
        errors["venue"] = "Enter where the meeting is"
    elif venue and len(venue) > MAX_VENUE:
        errors["venue"] = f"Venue must be {MAX_VENUE} characters or fewer"
    if kind in ("online", "hybrid") and not online_url:
        errors["online_url"] = "Enter the joining link for the online meeting"
    elif online_url and (not re.match(r"^https?://\S+$", online_url) or len(online_url) > MAX_URL):
        errors["online_url"] = "Enter the joining link as a web address starting with https://"
    if kind == "online":
        venue = None
    if kind == "in_person":
        online_url = None

    capacity = None
    try:
        capacity = _int_or_none(merged.get("capacity"))
        if capacity is not None and capacity < 1:
            errors["capacity"] = "Capacity must be a whole number of 1 or more, or empty for no limit"
    except (TypeError, ValueError):
        errors["capacity"] = "Capacity must be a whole number of 1 or more, or empty for no limit"

    speakers: list[Speaker] = []
    for i, s in enumerate(merged.get("speakers") or []):
        s = s if isinstance(s, dict) else getattr(s, "__dict__", {})
        name = collapse_spaces(s.get("name"))
        if not name:
            errors["speakers"] = f"Speaker {i + 1} needs a name"
            continue
        speakers.append(
            Speaker(name=name[:MAX_NAME], title=collapse_spaces(s.get("title")) or None,
                    session_title=collapse_spaces(s.get("session_title")) or None)
        )

    offsets_raw = merged.get("reminder_offsets")
    offsets: list[int] = list(DEFAULT_REMINDER_OFFSETS) if offsets_raw is None else []
    if offsets_raw is not None:
        try:
            offsets = sorted({int(o) for o in offsets_raw}, reverse=True)
        except (TypeError, ValueError):
            errors["reminder_offsets"] = "Reminders are whole numbers of minutes before the start"
        if any(o < 1 or o > MAX_REMINDER_OFFSET for o in offsets):
            errors["reminder_offsets"] = "Each reminder must be between 1 minute and 30 days before the start"

    if errors:
        raise InvalidMeeting(errors)
    assert starts_at is not None and ends_at is not None
    return MeetingPlan(
        title=title,
        description=description,
        kind=kind,
        scope_type=scope_type,
        scope_id=scope_id,
        starts_at=starts_at,
        ends_at=ends_at,
        timezone=tz_name,
        venue=venue,
        online_url=online_url,
        capacity=capacity,
        rsvp_deadline=rsvp_deadline,
        campaign_id=collapse_spaces(merged.get("campaign_id")) or None,
        parent_meeting_id=collapse_spaces(merged.get("parent_meeting_id")) or None,
        speakers=speakers,
        reminder_offsets=offsets,
    )


def changed_fields(before: MeetingPlan, after: MeetingPlan) -> list[str]:
    a, b = before.as_row(), after.as_row()
    return [f for f in UPDATABLE_FIELDS if a.get(f) != b.get(f)]


def rsvp_closed_reason(*, status: str, starts_at: datetime, ends_at: datetime,
                       rsvp_deadline: datetime | None, now: datetime) -> str | None:
    """Why a meeting takes no RSVP now, in words for the person, or None when it does."""
    if status == "cancelled":
        return "This meeting has been cancelled."
    if now >= ends_at:
        return "This meeting has already taken place."
    if rsvp_deadline is not None and now > rsvp_deadline:
        return "RSVPs for this meeting have closed."
    return None


def place_for(*, capacity: int | None, going: int, party: int) -> RsvpStatus:
    """A place if the whole party (the person and their guests) fits; otherwise the waitlist."""
    if capacity is None or going + party <= capacity:
        return "going"
    return "waitlisted"


def reminder_due_times(starts_at: datetime, offsets: list[int], now: datetime) -> list[tuple[int, datetime]]:
    """The reminders still worth sending: each (minutes before, due time) whose due time has not passed."""
    due = [(o, starts_at - timedelta(minutes=o)) for o in offsets]
    return [(o, d) for o, d in due if d > now]


def new_check_in_code() -> str:
    return "".join(secrets.choice(CHECK_IN_ALPHABET) for _ in range(6))


def normalise_code(raw: str) -> str:
    return re.sub(r"[\s-]", "", raw or "").upper()


def person_ref(*, member_id: str | None, email: str | None, secret_key: str) -> str:
    """Who an RSVP is for, to refuse a second one: the member, or a keyed hash of the email address."""
    if member_id:
        return f"member:{member_id}"
    digest = hmac.new(secret_key.encode(), normalise_email(email or "").encode(), hashlib.sha256).hexdigest()
    return f"email:{digest[:40]}"


@dataclass
class RsvpForm:
    """An RSVP as typed, validated."""

    name: str | None
    email: str | None
    member_id: str | None = None
    guests: int = 0
    join_network: bool = False
    email_consent: bool = False
    postcode: str | None = None


def validate_rsvp(
    *,
    name: str,
    email: str,
    member_id: str | None = None,
    guests: Any = 0,
    join_network: bool = False,
    postcode: str = "",
) -> RsvpForm:
    """A member (known by a signed link) needs nothing more; anyone else gives a name and an email address."""
    errors: dict[str, str] = {}
    name = collapse_spaces(name)
    email_n = normalise_email(email)
    if not member_id or name or email_n:
        errors.update(person_problems(name, email_n))
    try:
        guests_n = _int_or_none(guests) or 0
        if guests_n < 0 or guests_n > MAX_GUESTS:
            errors["guests"] = f"Guests must be between 0 and {MAX_GUESTS}"
    except (TypeError, ValueError):
        guests_n = 0
        errors["guests"] = f"Guests must be a whole number between 0 and {MAX_GUESTS}"
    postcode_n = None
    if join_network:
        postcode_n = normalise_postcode(postcode)
        if not postcode_n:
            errors["postcode"] = "Enter your postcode, so we can put you in touch with your nearest local group"
        elif not UK_POSTCODE_RE.match(postcode_n):
            errors["postcode"] = "Enter a real UK postcode, like B1 1AA"
    if errors:
        raise InvalidRsvp(errors)
    return RsvpForm(
        name=name or None,
        email=email_n or None,
        member_id=member_id,
        guests=guests_n,
        join_network=join_network,
        email_consent=join_network,
        postcode=postcode_n,
    )
