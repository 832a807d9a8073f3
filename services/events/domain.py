"""The events service's rules, with no I/O: what makes a meeting valid, who gets a place, when reminders fall due.

The use cases (meetings.py, rsvps.py, checkin.py, reminders.py) load state under the meeting's row lock, ask a rule
here what changes and which events that raises, then write and emit; the rules' tests need no database or Kafka.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.contact import (
    MAX_NAME,
    UK_POSTCODE_RE,
    address_ref,
    collapse_spaces,
    normalise_email,
    normalise_postcode,
    person_problems,
)
from shared.errors import InvalidInput
from shared.events import catalog as ev
from shared.events.envelope import EventData

DEFAULT_TIMEZONE = "Europe/London"
DEFAULT_REMINDER_OFFSETS: tuple[int, ...] = (24 * 60, 60)  # minutes before the start
MAX_REMINDER_OFFSET = 60 * 24 * 30
KINDS: tuple[tuple[str, str], ...] = (("in_person", "In person"), ("online", "Online"), ("hybrid", "Hybrid"))
SCOPE_TYPES = ("network", "region", "group", "subteam")
MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_VENUE = 500
MAX_URL = 1000
MAX_CAPACITY = 1_000_000
MAX_GUESTS = 10

# Rate limits of the public forms (shared/ratelimit.py; settings in `rate_limits`, seeded by migration 0003):
# per client address, and per email address (over that one, the answer looks the same and nothing is done).
RSVP_PER_IP = "rsvp-per-ip"
RSVP_PER_EMAIL = "rsvp-per-email"
CHECK_IN_PER_IP = "check-in-per-ip"
RATE_LIMITS: tuple[tuple[str, int, int], ...] = (
    (RSVP_PER_IP, 30, 600),
    (RSVP_PER_EMAIL, 5, 3600),
    (CHECK_IN_PER_IP, 120, 600),  # a venue's wifi is one address for everyone checking in
)
CHECK_IN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud at a venue
SELF_CHECK_IN_OPENS = timedelta(hours=1)  # before the start
SELF_CHECK_IN_CLOSES = timedelta(hours=1)  # after the end
FIXED_FIELDS = ("parent_meeting_id",)  # a conference's session stays in its conference

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


class MeetingNotFound(LookupError):
    """No meeting with that id."""


class RsvpNotFound(LookupError):
    """No RSVP with that id (for that meeting)."""


class NotYourMeeting(PermissionError):
    """The organiser's scope does not cover the meeting."""


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
    "scope_type",
    "scope_id",
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


def with_default_end(raw: dict[str, Any], length: timedelta) -> dict[str, Any]:
    """A new meeting typed without an end lasts `length` (a start that cannot be read is left for the rules)."""
    if raw.get("ends_at") or not raw.get("starts_at"):
        return raw
    try:
        starts = to_utc(raw["starts_at"], _zone(raw.get("timezone") or DEFAULT_TIMEZONE) or ZoneInfo(DEFAULT_TIMEZONE))
    except ValueError:
        return raw
    return {**raw, "ends_at": starts + length} if starts else raw


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
        if capacity is not None and not 1 <= capacity <= MAX_CAPACITY:
            errors["capacity"] = f"Capacity must be a whole number from 1 to {MAX_CAPACITY:,}, or empty for no limit"
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


def desk_matches(search: str, *texts: str | None) -> bool:
    """Whether a person at the check-in desk matches what the organiser typed: any part of their name or address,
    case and extra spaces aside (nothing typed matches everyone)."""
    wanted = collapse_spaces(search).lower()
    return not wanted or any(wanted in collapse_spaces(t).lower() for t in texts if t)


def new_check_in_code() -> str:
    return "".join(secrets.choice(CHECK_IN_ALPHABET) for _ in range(6))


def normalise_code(raw: str) -> str:
    return re.sub(r"[\s-]", "", raw or "").upper()


def person_ref(*, member_id: str | None, email: str | None, secret_key: str) -> str:
    """Who an RSVP is for, to refuse a second one: the member, or a keyed hash of the email address."""
    if member_id:
        return f"member:{member_id}"
    return address_ref(secret_key, email)


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
    name_optional: bool = False,
) -> RsvpForm:
    """A member (known by a signed link) needs nothing more; anyone else gives a name and an email address (an
    integration's record helper may give an email address alone, as Action Network's accepts)."""
    errors: dict[str, str] = {}
    name = collapse_spaces(name)
    email_n = normalise_email(email)
    if not member_id or name or email_n:
        errors.update(person_problems(name, email_n))
        if name_optional and not name:
            errors.pop("name", None)
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


# Changing and cancelling a meeting ------------------------------------------------------------------------------
def plan_change(current: MeetingPlan, *, status: str, raw: dict[str, Any],
                now: datetime) -> tuple[MeetingPlan, list[str]]:
    """The meeting once `raw` is applied, and the fields that change (none: nothing to do). Who a meeting is for
    may change (the caller checks the organiser covers the new scope); a session stays in its conference; a
    cancelled meeting cannot be changed."""
    if status == "cancelled":
        raise InvalidMeeting({"status": "This meeting has been cancelled and cannot be changed"})
    after = validate_meeting({k: v for k, v in raw.items() if k not in FIXED_FIELDS}, now=now, existing=current)
    return after, changed_fields(current, after)


def scope_moves(changed: list[str]) -> bool:
    """Whether a change moves a meeting to another part of the network."""
    return "scope_type" in changed or "scope_id" in changed


def cancel_reason(raw: str | None) -> str | None:
    """The reason as it is kept and announced: one line, at most 1,000 characters, None when empty."""
    return " ".join((raw or "").split())[:1000] or None


# Places, RSVPs and the waitlist ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Places:
    """A meeting's places as the RSVP rules see them, read under the meeting's row lock."""

    meeting_id: str
    status: str  # scheduled | cancelled
    capacity: int | None
    going_count: int  # places taken, guests included
    waitlist_last: int  # the last waitlist position handed out

    @classmethod
    def of(cls, row: Any) -> Places:
        return cls(row.id, row.status, row.capacity, row.going_count, row.waitlist_last)

    @property
    def hands_out_places(self) -> bool:
        """Only a meeting that is still on moves people up from its waitlist."""
        return self.status == "scheduled"


@dataclass(frozen=True)
class Rsvp:
    """One person's RSVP as the rules see it."""

    id: str
    status: str  # going | waitlisted | cancelled
    guests: int = 0
    member_id: str | None = None
    waitlist_position: int | None = None
    attended: bool = False

    @classmethod
    def of(cls, row: Any) -> Rsvp:
        return cls(row.id, row.status, row.guests, row.member_id, row.waitlist_position, row.attended_at is not None)

    @property
    def party(self) -> int:
        """The places it takes: the person and their guests."""
        return 1 + self.guests

    @property
    def stands(self) -> bool:
        return self.status != "cancelled"


@dataclass(frozen=True)
class RsvpDecision:
    """Where an RSVP puts the person, and what it takes from the meeting's places."""

    status: str  # going | waitlisted
    waitlist_position: int | None
    places_taken: int = 0
    already: bool = False  # their RSVP still stands: a duplicate changes nothing


def decide_rsvp(places: Places, *, party: int, existing: Rsvp | None, someone_waiting: bool) -> RsvpDecision:
    """A place if the whole party fits and nobody waits before them, otherwise the next waitlist position; someone
    whose RSVP still stands keeps it as it is."""
    if existing is not None and existing.stands:
        return RsvpDecision(existing.status, existing.waitlist_position, already=True)
    if someone_waiting or place_for(capacity=places.capacity, going=places.going_count, party=party) == "waitlisted":
        return RsvpDecision("waitlisted", places.waitlist_last + 1)
    return RsvpDecision("going", None, places_taken=party)


@dataclass(frozen=True)
class Promotion:
    """Who moves up from the waitlist, the places taken once they have, and the events that announces."""

    promoted: list[Rsvp]
    going_count: int
    events: list[EventData]


def promote_from_waitlist(places: Places, waiting: Sequence[Rsvp]) -> Promotion:
    """Freed places go to the waitlist (in position order) until a party does not fit: nobody jumps the queue."""
    going, promoted = places.going_count, []
    if places.hands_out_places:
        for rsvp in waiting:
            if place_for(capacity=places.capacity, going=going, party=rsvp.party) != "going":
                break
            going += rsvp.party
            promoted.append(rsvp)
    events: list[EventData] = [
        ev.PromotedFromWaitlist(meeting_id=places.meeting_id, rsvp_id=r.id, member_id=r.member_id) for r in promoted
    ]
    return Promotion(promoted, going, events)


@dataclass(frozen=True)
class Cancellation:
    """An RSVP given up: the places it frees (none from the waitlist), the meeting's places after, the event."""

    places_freed: int
    places: Places
    events: list[EventData]


def cancel_rsvp(places: Places, rsvp: Rsvp) -> Cancellation | None:
    """Give up an RSVP; None when it already was (cancelling twice changes nothing)."""
    if not rsvp.stands:
        return None
    freed = rsvp.party if rsvp.status == "going" else 0
    return Cancellation(
        freed,
        replace(places, going_count=places.going_count - freed),
        [ev.RsvpCancelled(meeting_id=places.meeting_id, rsvp_id=rsvp.id, member_id=rsvp.member_id)],
    )


# Check-in and attendance -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attendance:
    """Someone marked as there: whether they came off the waitlist (their party now counts), and the events."""

    from_waitlist: bool
    events: list[EventData]


def attend(places: Places, rsvp: Rsvp, *, method: str, now: datetime) -> Attendance | None:
    """Mark someone as there; None when they already are (AttendanceRecorded once only). Someone from the
    waitlist who came anyway has a place now: it counts, and they leave the waitlist."""
    if places.status == "cancelled":
        raise CheckInRefused("This meeting was cancelled")
    if rsvp.attended:
        return None
    events: list[EventData] = []
    if rsvp.status == "waitlisted":
        events.append(ev.PromotedFromWaitlist(meeting_id=places.meeting_id, rsvp_id=rsvp.id, member_id=rsvp.member_id))
    events.append(ev.AttendanceRecorded(meeting_id=places.meeting_id, rsvp_id=rsvp.id, member_id=rsvp.member_id,
                                        method=method, attended_at=now))  # type: ignore[arg-type]
    return Attendance(rsvp.status == "waitlisted", events)


def walk_in_method(places: Places, existing: Rsvp | None, method: str) -> str:
    """How a person at the door is recorded: someone whose RSVP stands is checked in by the organiser (not a walk-in);
    anyone else gets a place whatever the capacity, recorded with `method`."""
    if places.status == "cancelled":
        raise CheckInRefused("This meeting was cancelled")
    if existing is not None and existing.stands and method == "walk_in":
        return "organiser"
    return method


def self_check_in_refusal(*, status: str, starts_at: datetime, ends_at: datetime, expected_code: str, code: str,
                          now: datetime) -> str | None:
    """Why the code shown at the venue does not check someone in now, in words for them, or None when it does:
    from an hour before the start to an hour after the end, with the meeting's code however it was typed."""
    if status == "cancelled":
        return "This meeting was cancelled."
    if now < starts_at - SELF_CHECK_IN_OPENS:
        return "Check-in opens an hour before the meeting starts."
    if now > ends_at + SELF_CHECK_IN_CLOSES:
        return "Check-in for this meeting has closed."
    if not hmac.compare_digest(normalise_code(code), expected_code):
        return "That code does not match the one shown at the venue. Check it and try again."
    return None


# Reminders ----------------------------------------------------------------------------------------------------
def reminder_wait(next_due: datetime | None, *, now: datetime, poll_interval_s: float) -> float:
    """How long the reminder loop sleeps: until the next reminder falls due, at most the poll interval."""
    if next_due is None:
        return poll_interval_s
    return max(0.05, min(poll_interval_s, (next_due - now).total_seconds()))


# The read model of members ------------------------------------------------------------------------------------
def profile_changes(event: ev.MemberProfileUpdated) -> dict[str, Any]:
    """What a profile update changes in the read model: region, groups and sub-teams, only those it names."""
    changes: dict[str, Any] = {}
    if "region_id" in event.changed or "region" in event.changed:
        changes["region_id"] = event.region_id
    if "group_ids" in event.changed or "groups" in event.changed:
        changes["group_ids"] = event.group_ids
    if "subteam_ids" in event.changed or "subteams" in event.changed:
        changes["subteam_ids"] = event.subteam_ids
    return changes
