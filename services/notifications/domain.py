"""Notifications' rules, without I/O: who gets which email, and when. The use cases load the state these take
(a key's state, a recipient's row, a meeting) and act on what they decide; tests/notifications/test_rules.py
checks them without Kafka or a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

# Events that need a subject's key ---------------------------------------------------------------------------


class Readiness(StrEnum):
    """What becomes of an event whose sealed fields need its subject's key (a joiner's welcome, say)."""

    NOW = "now"  # the key is here and nothing of the subject waits: handle it
    WAIT = "wait"  # park it until the key arrives (or behind the subject's parked events, to keep their order)
    DROP = "drop"  # the key was destroyed (the person was erased): nobody is emailed, nothing is kept


def readiness(*, has_key: bool, destroyed: bool, others_wait: bool) -> Readiness:
    """Whether an event needing its subject's key goes ahead now, waits for the key, or is dropped."""
    if destroyed:
        return Readiness.DROP
    if not has_key or others_wait:
        return Readiness.WAIT
    return Readiness.NOW


def first_name_of(name: str | None) -> str:
    """How an email greets someone: their first name, or "friend"."""
    return (name or "").split(" ")[0] or "friend"


# The activity log's arrivals ---------------------------------------------------------------------------------


def arrivals_and_returns(
    rows: list[dict[str, Any]], known: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A run of MemberJoined's activity rows split into the arrivals to record and the returns to apply to the row
    recorded before. A member is new once: a MemberJoined for someone the log already has (`known`: subject ids
    with a `member_joined` row), or met earlier in the run, is them coming back (a rejoin after leaving, or the
    same event again), which moves their row to where they are now and makes it count again, not a second row."""
    arrivals: list[dict[str, Any]] = []
    returns: list[dict[str, Any]] = []
    seen = set(known)
    for row in rows:
        subject = row["subject_id"]
        (returns if subject in seen else arrivals).append(row)
        seen.add(subject)
    return arrivals, returns


# Keys marking an arrival that no longer counts as a new member (the member left, or was erased): what digests and
# the dashboard both count as new is "joined in the period and still a member".
GONE = "gone"


WELCOME_MEETINGS = 3  # how many meetings near them a welcome lists


class Placed(Protocol):
    """What `meetings_near` reads of a meeting."""

    @property
    def scope_type(self) -> str: ...
    @property
    def scope_id(self) -> str | None: ...


M = TypeVar("M", bound=Placed)


def meetings_near(
    meetings: Iterable[M],
    *,
    region_id: str | None,
    group_ids: Iterable[str],
    subteam_ids: Iterable[str],
    limit: int = WELCOME_MEETINGS,
) -> list[M]:
    """The first `limit` of `meetings` (soonest first) a member can come to as a member of their groups, sub-teams
    and region, or of the network: what their welcome lists as "coming up near you"."""
    places = {*group_ids, *subteam_ids, *([region_id] if region_id else [])}
    near = [m for m in meetings if m.scope_type == "network" or (m.scope_id is not None and m.scope_id in places)]
    return near[:limit]


CONFIRMATIONS = {"petition": "petition_signed", "pledge": "pledge_received"}


def confirmation_kind(action_kind: str) -> str | None:
    """The confirmation (a kind of delivery, an autoresponder of wording.py) an action of `action_kind` gets."""
    return CONFIRMATIONS.get(action_kind)


def mirror_status(confirmation_required: bool) -> str:
    """A joiner's status in the recipients mirror: pending until they confirm their address, when asked to."""
    return "pending" if confirmation_required else "confirmed"


def lifts_unsubscribe(email_consent: bool, email: str | None) -> bool:
    """Joining (again) with consent to email lifts an earlier unsubscribe or leaving of that address."""
    return email_consent and bool(email)


# Meeting announcements ----------------------------------------------------------------------------------------

ANNOUNCEMENT_TOPIC = "meetings"  # the kind of email a member can opt out of in their preferences


@dataclass(frozen=True)
class Audience:
    """Who a meeting's announcement goes to: confirmed members who consented to email and did not opt out of
    `topic`, within the meeting's scope (`field` of the recipients mirror holding `unit_id`; None: everyone)."""

    field: str | None
    unit_id: str | None
    topic: str = ANNOUNCEMENT_TOPIC


def announcement_audience(scope_type: str, scope_id: str | None) -> Audience:
    """A region's meeting goes to the region's members, a group's to its members, a sub-team's to the sub-team,
    a network-wide one to everyone."""
    field = {"region": "region_id", "group": "group_ids", "subteam": "subteam_ids"}.get(scope_type)
    return Audience(field, scope_id if field else None)


def is_announced(parent_meeting_id: str | None) -> bool:
    """A conference's sessions are announced with the conference, not one by one."""
    return parent_meeting_id is None


def audience_moves(changed: Iterable[str]) -> bool:
    """Whether a meeting's change moves it to another part of the network (MeetingUpdated.changed), so its
    announcement reaches whoever is in the new audience and was not told yet."""
    return bool({"scope_type", "scope_id"} & set(changed))


def announcement_goes_ahead(status: str, starts_at: datetime, now: datetime) -> bool:
    """An announcement still worth sending: the meeting is not cancelled and has not started."""
    return status != "cancelled" and starts_at >= now


# Emails about a member's RSVP ------------------------------------------------------------------------------

STALE_AFTER = timedelta(days=2)
CHANGES_WORTH_AN_EMAIL = frozenset({"starts_at", "ends_at", "venue", "kind", "timezone", "title"})


def changes_worth_an_email(changed: Iterable[str]) -> list[str]:
    """The changes of a meeting its attendees are told about (sorted); none: no email."""
    return sorted(CHANGES_WORTH_AN_EMAIL & set(changed))


def rsvp_email_wanted(kind: str, meeting_ends_at: datetime, occurred_at: datetime, now: datetime) -> bool:
    """Whether an email about an RSVP is still of use: not about a meeting that is over (unless it tells of its
    cancellation), and not caused by an old event met late (a new consumer reading history, a long outage)."""
    if kind != "meeting_cancelled" and meeting_ends_at < now:
        return False
    return occurred_at >= now - STALE_AFTER


# Follow-ups -------------------------------------------------------------------------------------------------

FOLLOW_UP_KIND = "follow_up"  # not transactional: carries List-Unsubscribe, stops on unsubscribe (suppression.py)
FOLLOW_UP_TOPIC = "follow_ups"  # the kind of email a member can opt out of in their preferences
RECHECK_AFTER = timedelta(hours=6)  # a member not yet confirmed (or not mirrored yet) is looked at again
GIVE_UP_AFTER = timedelta(days=7)  # ... until this long after the step was due


class Recipient(Protocol):
    """What the follow-up rule reads of a member's row in the recipients mirror."""

    @property
    def email(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def email_consent(self) -> bool: ...
    @property
    def email_topics(self) -> Any: ...


def follow_up_decision(
    *,
    step_enabled: bool | None,
    took_part: bool,
    recipient: Recipient | None,
    suppressed: bool,
    due_at: datetime,
    now: datetime,
) -> tuple[str, str | None]:
    """('queued' | 'skipped' | 'due', reason) for one follow-up that is due: queue it, skip it for good (the
    reason), or look again later (not confirmed yet, or not mirrored yet) until GIVE_UP_AFTER has passed.
    `step_enabled`: None when the step was deleted; `suppressed`: whether the address's suppression stops
    follow-ups."""
    if not step_enabled:
        return "skipped", "step switched off"
    if took_part:
        return "skipped", "already took part"
    too_late = now - due_at > GIVE_UP_AFTER
    if recipient is None or not recipient.email:
        return ("skipped", "no address") if too_late else ("due", "waiting for the member's details")
    if recipient.status == "pending":
        return ("skipped", "never confirmed") if too_late else ("due", "waiting for confirmation")
    if recipient.status != "confirmed":
        return "skipped", f"member {recipient.status}"
    if not recipient.email_consent:
        return "skipped", "no consent to email"
    if recipient.email_topics is not None and FOLLOW_UP_TOPIC not in recipient.email_topics:
        return "skipped", "opted out of follow-ups"
    if suppressed:
        return "skipped", "address suppressed"
    return "queued", None


# Anything shaped like an email address, with or without the angle brackets a relay puts around it.
_ADDRESS = re.compile(r"<?[^\s<>@\"',;:()\[\]]+@[^\s<>@\"',;:()\[\]]+>?")


def without_addresses(error: str) -> str:
    """An SMTP error or a bounce's diagnostic as kept and published: relays echo the recipient's address in it
    ("550 5.1.1 <ada@example.org>: Recipient address rejected"), and an address must not outlive its owner's
    erasure in a delivery record or on a topic."""
    return _ADDRESS.sub("<address>", error)


# Mailings organisers write ---------------------------------------------------------------------------------

MAILING_STATUSES = ("draft", "scheduled", "sending", "sent")
MAX_SUBJECT = 200
MAX_BODY = 50_000
MAX_JOINED_DAYS = 3650


@dataclass(frozen=True)
class MailingAudience:
    """Who a mailing is for, within its writer's scope: members in any of `unit_ids` (regions, groups, sub-teams;
    none: the writer's whole scope) who chose any of `interests` (none: any), at any of `levels` (none: any),
    who joined in the last `joined_within_days` days (None: any time), who took part (an RSVP, attending, an action)
    in the last `took_part_within_days` days, who have not taken part for `quiet_for_days` days (or never), and in
    none of `exclude_unit_ids`. Consent and suppressions always apply on top."""

    unit_ids: tuple[str, ...] = ()
    interests: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    joined_within_days: int | None = None
    exclude_unit_ids: tuple[str, ...] = ()
    took_part_within_days: int | None = None
    quiet_for_days: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "unit_ids": list(self.unit_ids),
            "interests": list(self.interests),
            "levels": list(self.levels),
            "joined_within_days": self.joined_within_days,
            "exclude_unit_ids": list(self.exclude_unit_ids),
            "took_part_within_days": self.took_part_within_days,
            "quiet_for_days": self.quiet_for_days,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MailingAudience:
        return cls(
            tuple(data.get("unit_ids") or ()),
            tuple(data.get("interests") or ()),
            tuple(data.get("levels") or ()),
            data.get("joined_within_days"),
            tuple(data.get("exclude_unit_ids") or ()),
            data.get("took_part_within_days"),
            data.get("quiet_for_days"),
        )


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in values if v and v.strip()))


def parse_mailing_audience(
    unit_ids: Iterable[str],
    interests: Iterable[str],
    levels: Iterable[str],
    joined_within_days: str,
    exclude_unit_ids: Iterable[str],
    *,
    allowed_units: set[str],
    took_part_within_days: str = "",
    quiet_for_days: str = "",
) -> tuple[MailingAudience, dict[str, str]]:
    """An audience from the compose form, and what is wrong with it (field: message). `allowed_units` are the
    units within the writer's scope: choosing any other is refused, never silently widened."""
    errors: dict[str, str] = {}
    units, excluded = _unique(unit_ids), _unique(exclude_unit_ids)
    if any(u not in allowed_units for u in units):
        errors["unit_ids"] = "Choose places from the list: only those you organise"
    if any(u not in allowed_units for u in excluded):
        errors["exclude_unit_ids"] = "Choose places to leave out from the list"
    days = {
        field: _days(typed, field, errors)
        for field, typed in (
            ("joined_within_days", joined_within_days),
            ("took_part_within_days", took_part_within_days),
            ("quiet_for_days", quiet_for_days),
        )
    }
    audience = MailingAudience(
        units,
        _unique(interests),
        _unique(levels),
        days["joined_within_days"],
        excluded,
        days["took_part_within_days"],
        days["quiet_for_days"],
    )
    return audience, errors


def _days(typed: str, field: str, errors: dict[str, str]) -> int | None:
    """A number of days typed in a form (empty: None); what is wrong with it goes in `errors`."""
    if not typed.strip():
        return None
    try:
        days = int(typed.strip())
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_JOINED_DAYS:
        errors[field] = f"Enter a number of days from 1 to {MAX_JOINED_DAYS}, or leave it empty"
        return None
    return days


def mailing_errors(subject: str, body: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not subject.strip():
        errors["subject"] = "Enter a subject"
    elif len(subject) > MAX_SUBJECT or "\n" in subject or "\r" in subject:
        errors["subject"] = f"Enter a subject on one line, at most {MAX_SUBJECT} characters"
    if not body.strip():
        errors["body"] = "Write the email"
    elif len(body) > MAX_BODY:
        errors["body"] = f"Keep the email under {MAX_BODY:,} characters"
    return errors


def mailing_is_editable(status: str) -> bool:
    """Only a draft is changed or sent; a scheduled mailing can go back to draft until it starts."""
    return status == "draft"


def mailing_is_due(status: str, send_at: datetime | None, now: datetime) -> bool:
    return status == "sending" or (status == "scheduled" and send_at is not None and send_at <= now)


def trackable(url: str) -> bool:
    """Only web links go through the click counter (never mailto:, never anything else)."""
    return url.lower().startswith(("http://", "https://"))


# Saved audiences ----------------------------------------------------------------------------------------------

MAX_AUDIENCE_NAME = 100


def audience_name_errors(name: str, taken: bool) -> dict[str, str]:
    """What is wrong with a name to save an audience under (`taken`: the scope has one of that name already)."""
    if not name.strip():
        return {"audience_name": "Enter a name for this audience"}
    if len(name.strip()) > MAX_AUDIENCE_NAME or "\n" in name or "\r" in name:
        return {"audience_name": f"Enter a name on one line, at most {MAX_AUDIENCE_NAME} characters"}
    if taken:
        return {"audience_name": "You have an audience of this name already: choose another name"}
    return {}


def describe_audience(audience: MailingAudience, unit_names: dict[str, str]) -> str:
    """An audience in words, for the list of saved audiences: "In Leicester; interests housing; …"."""
    parts = []
    if audience.unit_ids:
        parts.append("in " + ", ".join(unit_names.get(u, "a place you no longer organise") for u in audience.unit_ids))
    if audience.interests:
        parts.append("interested in " + ", ".join(audience.interests))
    if audience.levels:
        parts.append("at " + ", ".join(level.replace("_", " ") for level in audience.levels))
    if audience.joined_within_days:
        parts.append(f"joined in the last {audience.joined_within_days} days")
    if audience.took_part_within_days:
        parts.append(f"took part in the last {audience.took_part_within_days} days")
    if audience.quiet_for_days:
        parts.append(f"not taken part for {audience.quiet_for_days} days")
    if audience.exclude_unit_ids:
        parts.append("leaving out " + ", ".join(unit_names.get(u, "a place") for u in audience.exclude_unit_ids))
    text = "; ".join(parts) or "everyone you organise"
    return text[0].upper() + text[1:]
