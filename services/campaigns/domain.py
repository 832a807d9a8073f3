"""The campaigns service's rules, with no I/O: valid campaigns and asks, which actions are accepted and the events
they raise, the engagement ladder and the level changes it raises, postcodes and the MP dataset's format, the
letter template. They take loaded state and return what to store and publish; service.py, actions.py, letters.py
and engagement.py load and store."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.contact import (
    EMAIL_RE,
    UK_POSTCODE_RE,
    address_ref,
    collapse_spaces,
    normalise_email,
    normalise_postcode,
    person_problems,
)
from shared.crypto import encode_key, seal
from shared.errors import InvalidInput
from shared.events import catalog as ev
from shared.events.envelope import EventData, Sealed

SCOPE_TYPES = ("network", "region", "group", "subteam")
ASK_KINDS: tuple[tuple[str, str], ...] = (
    ("petition", "Sign the petition"),
    ("pledge", "Make a pledge"),
    ("write_to_mp", "Write to your MP"),
    ("attend", "Come to a meeting"),
    ("share", "Share the campaign"),
)
ASK_KIND_LABELS = dict(ASK_KINDS)
SHARE_CHANNELS: tuple[tuple[str, str], ...] = (
    ("email", "Email"),
    ("whatsapp", "WhatsApp"),
    ("bluesky", "Bluesky"),
    ("facebook", "Facebook"),
    ("x", "X"),
)
MAX_TITLE = 200
MAX_TEXT = 10_000
MAX_COMMENT = 500
MAX_PLEDGE = 1000
MAX_LETTER = 6000
MAX_LETTER_SUBJECT = 200

# Rate limits of the public forms (shared/ratelimit.py; settings in `rate_limits`, seeded by migration 0002):
# per client address (over it: 429), and per email address (over it: the answer looks the same, nothing is done).
ACTION_PER_IP = "action-per-ip"
ACTION_PER_EMAIL = "action-per-email"
LETTER_PER_IP = "letter-per-ip"
LETTER_PER_EMAIL = "letter-per-email"
RATE_LIMITS: tuple[tuple[str, int, int], ...] = (
    (ACTION_PER_IP, 30, 600),
    (ACTION_PER_EMAIL, 10, 3600),
    (LETTER_PER_IP, 5, 3600),
    (LETTER_PER_EMAIL, 3, 3600),
)
MAX_ISSUES = 20
# What a letter template may use; anything else in braces is left as typed.
LETTER_PLACEHOLDERS = ("mp_name", "constituency", "name", "postcode")


class ActionRefused(Exception):
    """The ask takes no action now (its campaign is closed, the ask is closed, or it is not an action form)."""


class NoConstituency(InvalidInput):
    """The postcode matches no constituency in the organisers' dataset."""


class CampaignNotFound(LookupError):
    """No campaign with that id."""


class AskNotFound(LookupError):
    """No ask with that id (in that campaign)."""


class ActionNotFound(LookupError):
    """No action with that id."""


class NotYours(PermissionError):
    """The organiser's scope does not cover the campaign."""


def postcode_keys(postcode: str) -> list[str]:
    """The dataset keys a full postcode may match, most precise first: unit, sector, district, area.

    `B15 2TT` → `B15 2TT`, `B15 2`, `B15`, `B`.
    """
    p = normalise_postcode(postcode)
    if " " not in p:
        return [p] if p else []
    outward, inward = p.split(" ", 1)
    area = re.match(r"^[A-Z]+", outward)
    keys = [p, f"{outward} {inward[:1]}", outward]
    if area:
        keys.append(area.group(0))
    return keys


def person_ref(*, member_id: str | None, email: str | None, secret_key: str) -> str | None:
    """Who took an action, to count them once per ask: the member, or a keyed hash of their email address."""
    if member_id:
        return f"member:{member_id}"
    if not email:
        return None
    return address_ref(secret_key, email)


# Campaigns and asks ---------------------------------------------------------------------------------
@dataclass
class CampaignPlan:
    title: str
    summary: str
    goal: str
    scope_type: str
    scope_id: str | None
    issues: list[str] = field(default_factory=list)
    partner_ids: list[str] = field(default_factory=list)


def validate_campaign(raw: dict[str, Any]) -> CampaignPlan:
    errors: dict[str, str] = {}
    title = collapse_spaces(raw.get("title"))
    if not title:
        errors["title"] = "Enter a title"
    elif len(title) > MAX_TITLE:
        errors["title"] = f"Title must be {MAX_TITLE} characters or fewer"
    summary = str(raw.get("summary") or "").strip()
    goal = str(raw.get("goal") or "").strip()
    for name, value in (("summary", summary), ("goal", goal)):
        if len(value) > MAX_TEXT:
            errors[name] = f"{name.capitalize()} must be {MAX_TEXT} characters or fewer"
    if not goal:
        errors["goal"] = "Say what the campaign wants to achieve"
    scope_type = raw.get("scope_type") or "network"
    scope_id = collapse_spaces(raw.get("scope_id")) or None
    if scope_type not in SCOPE_TYPES:
        errors["scope_type"] = "Choose who runs the campaign: the network, a region, a group or a sub-team"
    elif scope_type == "network":
        scope_id = None
    elif not scope_id:
        errors["scope_id"] = f"Choose the {scope_type} the campaign belongs to"
    issues = [collapse_spaces(i) for i in _as_list(raw.get("issues")) if collapse_spaces(i)]
    if len(issues) > MAX_ISSUES or any(len(i) > 80 for i in issues):
        errors["issues"] = f"Give at most {MAX_ISSUES} issues of 80 characters or fewer"
    partners = [collapse_spaces(p) for p in _as_list(raw.get("partner_ids")) if collapse_spaces(p)]
    if errors:
        raise InvalidInput(errors)
    return CampaignPlan(title, summary, goal, scope_type, scope_id, issues, list(dict.fromkeys(partners)))


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v for v in re.split(r"[,\n]", value)]
    return list(value)


@dataclass
class AskPlan:
    kind: str
    title: str
    description: str = ""
    body: str = ""  # petition text, pledge prompt, letter template, share message
    addressee: str | None = None  # the petition's target (who it is addressed to)
    goal: int | None = None  # how many actions the organisers aim for
    letter_subject: str | None = None
    meeting_id: str | None = None
    share_url: str | None = None


def validate_ask(raw: dict[str, Any]) -> AskPlan:
    errors: dict[str, str] = {}
    kind = raw.get("kind") or ""
    if kind not in ASK_KIND_LABELS:
        errors["kind"] = "Choose a petition, a pledge, write to your MP, a meeting or share"
    title = collapse_spaces(raw.get("title")) or ASK_KIND_LABELS.get(kind, "")
    if len(title) > MAX_TITLE:
        errors["title"] = f"Title must be {MAX_TITLE} characters or fewer"
    description = str(raw.get("description") or "").strip()
    body = str(raw.get("body") or "").strip()
    if len(description) > MAX_TEXT or len(body) > MAX_TEXT:
        errors["body"] = f"Texts must be {MAX_TEXT} characters or fewer"
    addressee = collapse_spaces(raw.get("addressee")) or None
    goal = None
    if raw.get("goal") not in (None, ""):
        try:
            goal = int(str(raw.get("goal")).strip())
            if goal < 1:
                raise ValueError
        except ValueError:
            errors["goal"] = "The goal must be a whole number of 1 or more, or empty"
    letter_subject = collapse_spaces(raw.get("letter_subject")) or None
    meeting_id = collapse_spaces(raw.get("meeting_id")) or None
    share_url = str(raw.get("share_url") or "").strip() or None
    if kind == "petition":
        if not addressee:
            errors["addressee"] = "Say who the petition is addressed to"
        if not body:
            errors["body"] = "Enter the text of the petition"
    elif kind == "pledge" and not body:
        errors["body"] = "Enter what people pledge, for example 'I pledge to…'"
    elif kind == "write_to_mp":
        if not body:
            errors["body"] = "Enter the letter template people start from"
        if not letter_subject:
            errors["letter_subject"] = "Enter the subject of the letter"
        elif len(letter_subject) > MAX_LETTER_SUBJECT:
            errors["letter_subject"] = f"The subject must be {MAX_LETTER_SUBJECT} characters or fewer"
    elif kind == "attend" and not meeting_id:
        errors["meeting_id"] = "Choose the meeting people are asked to come to"
    elif kind == "share" and share_url and not re.match(r"^https?://\S+$", share_url):
        errors["share_url"] = "Enter the address to share as a web address starting with https://"
    if errors:
        raise InvalidInput(errors)
    return AskPlan(kind, title, description, body, addressee, goal, letter_subject, meeting_id, share_url)


def check_new_ask(plan: AskPlan, *, campaign_status: str, meeting_known: bool) -> None:
    """Whether a campaign takes this ask: not once it has closed; an attend ask only for a meeting we know of."""
    if campaign_status == "closed":
        raise InvalidInput({"campaign": "This campaign has closed: it takes no new asks"})
    if plan.kind == "attend" and not meeting_known:
        raise InvalidInput({"meeting_id": "There is no meeting with that id (a new one takes a moment to "
                                          "arrive from the events service)"})


def check_publish(*, campaign_status: str, asks: int) -> bool:
    """Whether a draft goes live now: True to publish, False when it is already live or closed (publishing twice
    changes nothing); a draft with no ask is refused, since its public page would offer nothing to do."""
    if campaign_status != "draft":
        return False
    if asks < 1:
        raise InvalidInput({"asks": "Add at least one ask before publishing: the public page would offer nothing"})
    return True


def attend_ask_for(*, meeting_id: str, title: str, campaign_status: str | None, linked: bool) -> AskPlan | None:
    """A meeting scheduled for a live campaign becomes one of its asks, once (None: nothing to add)."""
    if campaign_status != "live" or linked:
        return None
    return AskPlan(kind="attend", title=f"Come to {title}"[:MAX_TITLE], meeting_id=meeting_id)


# Actions ---------------------------------------------------------------------------------------------
@dataclass
class ActionForm:
    """What someone typed to take an action, validated."""

    member_id: str | None = None
    name: str | None = None
    email: str | None = None
    postcode: str | None = None
    join_network: bool = False
    comment: str | None = None
    pledge_text: str | None = None
    letter_subject: str | None = None
    letter_body: str | None = None
    channel: str | None = None

    @property
    def email_consent(self) -> bool:
        return self.join_network


def _person(errors: dict[str, str], *, member_id: str | None, name: str, email: str,
            name_optional: bool = False) -> tuple[str | None, str | None]:
    """A member (known by a signed link) needs to give nothing; anyone else a name and an email address (an
    integration's record helper may give an email address alone, as Action Network's accepts)."""
    name_c = collapse_spaces(name)
    email_n = normalise_email(email)
    if member_id and not name_c and not email_n:
        return None, None
    errors.update(person_problems(name_c, email_n))
    if name_optional and not name_c:
        errors.pop("name", None)
    return name_c or None, email_n or None


def _postcode(errors: dict[str, str], raw: str, *, required: bool, why: str) -> str | None:
    p = normalise_postcode(raw)
    if not p:
        if required:
            errors["postcode"] = f"Enter your postcode, {why}"
        return None
    if not UK_POSTCODE_RE.match(p):
        errors["postcode"] = "Enter a real UK postcode, like B1 1AA"
    return p


def validate_action(kind: str, *, member_id: str | None = None, name: str = "", email: str = "",
                    postcode: str = "", join_network: bool = False, comment: str = "", pledge_text: str = "",
                    letter_subject: str = "", letter_body: str = "", channel: str = "",
                    name_optional: bool = False) -> ActionForm:
    """Check an action as typed for an ask of `kind`; every problem at once, so the form can show them all."""
    errors: dict[str, str] = {}
    join = bool(join_network) and member_id is None
    form = ActionForm(member_id=member_id, join_network=join)
    if kind == "share":
        if channel not in dict(SHARE_CHANNELS):
            errors["channel"] = "Choose where to share"
        form.channel = channel
        if errors:
            raise InvalidInput(errors)
        return form
    # write_to_mp always needs the sender's name and address: the MP answers constituents only.
    form.name, form.email = _person(errors, member_id=None if kind == "write_to_mp" else member_id,
                                    name=name, email=email, name_optional=name_optional and kind != "write_to_mp")
    form.postcode = _postcode(
        errors, postcode, required=join or kind == "write_to_mp",
        why="so we can find your MP" if kind == "write_to_mp" else "so we can put you in touch with your local group",
    )
    if kind == "petition":
        text = str(comment or "").strip()
        if len(text) > MAX_COMMENT:
            errors["comment"] = f"Your comment must be {MAX_COMMENT} characters or fewer (it has {len(text)})"
        form.comment = text or None
    elif kind == "pledge":
        text = str(pledge_text or "").strip()
        if not text:
            errors["pledge_text"] = "Write your pledge in your own words"
        elif len(text) > MAX_PLEDGE:
            errors["pledge_text"] = (
                f"Your pledge must be {MAX_PLEDGE:,} characters or fewer (it has {len(text):,}): shorten it a little"
            )
        form.pledge_text = text or None
    elif kind == "write_to_mp":
        subject = collapse_spaces(letter_subject)
        body = str(letter_body or "").strip()
        if not subject:
            errors["letter_subject"] = "Enter a subject for your letter"
        elif len(subject) > MAX_LETTER_SUBJECT:
            errors["letter_subject"] = f"The subject must be {MAX_LETTER_SUBJECT} characters or fewer"
        if not body:
            errors["letter_body"] = "Write your letter"
        elif len(body) > MAX_LETTER:
            errors["letter_body"] = f"Your letter must be {MAX_LETTER:,} characters or fewer (it has {len(body):,})"
        form.letter_subject, form.letter_body = subject or None, body or None
    if errors:
        raise InvalidInput(errors)
    return form


KEY_OWNER = "campaigns"  # the owner named in what an action's key seals
ATTEND_NAMESPACE = uuid.UUID("4f0c62a4-5d1e-4b8e-9a51-6c3f0f6a1d7e")  # action ids of RSVPs: one per ask and RSVP


def closed_reason(*, campaign_status: str, ask_status: str) -> str | None:
    """Why an ask takes no action now, in words for the person, or None when it does."""
    if campaign_status == "closed":
        return "This campaign has closed, so it is no longer taking actions. Thank you for your support."
    if campaign_status == "draft":
        return "This campaign is not open yet: it takes actions once its organisers publish it."
    if ask_status == "closed":
        return "This action has closed. Thank you for your support."
    return None


def no_constituency_message(postcode: str) -> str:
    return (f"We could not find a constituency for the postcode {postcode.strip() or '(empty)'}. Check it is your "
            "home postcode, or write to us and we will find your MP for you.")


@dataclass(frozen=True)
class Ask:
    """What deciding on an action needs of its ask and the ask's campaign."""

    id: str
    campaign_id: str
    kind: str
    status: str = "open"
    campaign_status: str = "live"


@dataclass(frozen=True)
class NewAction:
    """An accepted action: the row that stores it (`row`) and the events that announce it (`events`)."""

    id: str
    ask: Ask
    form: ActionForm
    person_ref: str | None
    source: str
    region_id: str | None
    group_id: str | None
    constituency: Constituency | None
    taken_at: datetime

    @property
    def needs_key(self) -> bool:
        """Whether it carries a name or an email address, sealed with a key of the action's own."""
        return bool(self.form.email or self.form.name)

    def row(self) -> dict[str, Any]:
        form, kind, constituency = self.form, self.ask.kind, self.constituency
        return {
            "id": self.id, "ask_id": self.ask.id, "campaign_id": self.ask.campaign_id, "kind": kind,
            "person_ref": self.person_ref, "member_id": form.member_id, "name": form.name, "email": form.email,
            "postcode": form.postcode, "comment": form.comment, "pledge_text": form.pledge_text,
            "moderation": "pending" if kind == "pledge" else None,
            "constituency_code": constituency.code if constituency else None,
            "mp_name": constituency.mp_name if constituency else None,
            "letter_subject": form.letter_subject, "letter_body": form.letter_body, "channel": form.channel,
            "join_network": form.join_network, "source": self.source, "region_id": self.region_id,
            "group_id": self.group_id, "created_at": self.taken_at,
        }

    def events(self, key: bytes | None = None, *, key_issued: bool = False) -> list[EventData]:
        """ActionTaken (and the letter, for an MP ask) with the person's fields sealed with `key`, the action's own;
        a key just made is issued first, on its key topic."""
        form, kind, action_id = self.form, self.ask.kind, self.id
        events: list[EventData] = []
        sealed: dict[str, Sealed] = {}

        def sealed_value(value: str) -> Sealed:
            assert key is not None, "an action with personal fields needs its key"
            return seal(value, key, key_id=action_id, owner=KEY_OWNER)

        if self.needs_key:
            if key_issued:
                assert key is not None
                events.append(ev.ActionKeyIssued(key_id=action_id, key=encode_key(key)))
            for name in ("email", "name"):
                if getattr(form, name):
                    sealed[name] = sealed_value(getattr(form, name))
            if form.postcode and (form.join_network or kind == "write_to_mp"):
                sealed["postcode"] = sealed_value(form.postcode)
        events.append(ev.ActionTaken(
            action_id=action_id, ask_id=self.ask.id, campaign_id=self.ask.campaign_id, kind=kind,  # type: ignore[arg-type]
            member_id=form.member_id, region_id=self.region_id, group_id=self.group_id,
            join_network=form.join_network, email_consent=form.email_consent, taken_at=self.taken_at, **sealed,
        ))
        if kind == "write_to_mp":
            constituency = self.constituency
            assert constituency and form.letter_subject and form.letter_body and form.name and form.email
            events.append(ev.MpLetterRequested(
                action_id=action_id, ask_id=self.ask.id, campaign_id=self.ask.campaign_id, member_id=form.member_id,
                constituency_code=constituency.code, constituency_name=constituency.name,
                mp_name=constituency.mp_name, mp_email=constituency.mp_email,
                letter_subject=sealed_value(form.letter_subject), letter_body=sealed_value(form.letter_body),
                sender_name=sealed["name"], sender_email=sealed["email"], sender_postcode=sealed["postcode"],
                requested_at=self.taken_at,
            ))
        return events

    @property
    def awaits_confirmation(self) -> bool:
        """A letter to an MP goes only once its writer has confirmed it from the link emailed to them."""
        return self.ask.kind == "write_to_mp"

    def confirmation_events(self, key: bytes, *, key_issued: bool = False) -> list[EventData]:
        """For a letter waiting for its writer: the action's key (when just made) and MpLetterAwaitingConfirmation,
        which has notifications email the writer the link. ActionTaken and the letter itself follow the
        confirmation (`events`)."""
        form, constituency = self.form, self.constituency
        assert constituency and form.letter_subject and form.name and form.email
        events: list[EventData] = []
        if key_issued:
            events.append(ev.ActionKeyIssued(key_id=self.id, key=encode_key(key)))
        events.append(letter_awaiting_confirmation(
            self.id, self.ask, key, member_id=form.member_id, constituency_name=constituency.name,
            mp_name=constituency.mp_name, name=form.name, email=form.email, subject=form.letter_subject))
        return events


def letter_awaiting_confirmation(action_id: str, ask: Ask, key: bytes, *, member_id: str | None,
                                 constituency_name: str, mp_name: str, name: str, email: str,
                                 subject: str) -> ev.MpLetterAwaitingConfirmation:
    def sealed(value: str) -> Sealed:
        return seal(value, key, key_id=action_id, owner=KEY_OWNER)

    return ev.MpLetterAwaitingConfirmation(
        action_id=action_id, ask_id=ask.id, campaign_id=ask.campaign_id, member_id=member_id,
        constituency_name=constituency_name, mp_name=mp_name, sender_name=sealed(name), sender_email=sealed(email),
        letter_subject=sealed(subject))


def repeat_events(action: Any, ask: Ask, key: bytes | None, *, key_issued: bool = False,
                  constituency_name: str | None = None) -> list[EventData]:
    """Someone took the action `action` (its stored row) stands for again: nothing changes, and its own address
    hears of it — the confirmation link again for a letter still waiting, otherwise ActionRepeated. With no
    address or member to tell (a share), nothing."""
    if key is None or not (action.email or action.member_id):
        return []
    events: list[EventData] = []
    if key_issued:
        events.append(ev.ActionKeyIssued(key_id=action.id, key=encode_key(key)))

    def sealed(value: str | None) -> Sealed | None:
        return seal(value, key, key_id=action.id, owner=KEY_OWNER) if value else None

    if ask.kind == "write_to_mp" and action.letter_confirmed_at is None and action.email and action.name:
        events.append(letter_awaiting_confirmation(
            action.id, ask, key, member_id=action.member_id, constituency_name=constituency_name or "",
            mp_name=action.mp_name or "", name=action.name, email=action.email, subject=action.letter_subject or ""))
    else:
        events.append(ev.ActionRepeated(
            action_id=action.id, ask_id=ask.id, campaign_id=ask.campaign_id, kind=ask.kind,  # type: ignore[arg-type]
            member_id=action.member_id, email=sealed(action.email), name=sealed(action.name),
        ))
    return events


def stored_action(row: Any, ask: Ask, constituency: Constituency | None, *, now: datetime) -> NewAction:
    """A letter waiting for confirmation, as accepted when it was written (to publish it once confirmed)."""
    form = ActionForm(member_id=row.member_id, name=row.name, email=row.email, postcode=row.postcode,
                      join_network=row.join_network, letter_subject=row.letter_subject, letter_body=row.letter_body)
    return NewAction(row.id, ask, form, row.person_ref, row.source, row.region_id, row.group_id, constituency, now)


def accept_action(ask: Ask, form: ActionForm, *, action_id: str, constituency: Constituency | None,
                  region_id: str | None, group_id: str | None, source: str, secret_key: str,
                  now: datetime, member_id: str | None = None) -> NewAction:
    """The action someone takes on `ask`, or why not: refused (ActionRefused) while the ask or its campaign is
    closed or for a meeting (an RSVP counts instead); a letter needs the MP of the sender's postcode
    (`constituency`, None when the dataset has none) and their email address (NoConstituency).

    `member_id`: the member whose address the form came with (recognised by its keyed hash): the action is theirs,
    though still counted once per address it was taken with (its person ref)."""
    reason = closed_reason(campaign_status=ask.campaign_status, ask_status=ask.status)
    if reason:
        raise ActionRefused(reason)
    if ask.kind == "attend":
        raise ActionRefused("RSVP on the meeting's own page: it counts here as soon as you have.")
    if ask.kind == "write_to_mp":
        if constituency is None:
            raise NoConstituency({"postcode": no_constituency_message(form.postcode or "")})
        if not constituency.mp_email:
            raise NoConstituency({"postcode": f"We have no email address for the MP for {constituency.name} "
                                              "yet, so we cannot send your letter. Please try again later."})
    ref = None if ask.kind == "share" else person_ref(member_id=form.member_id, email=form.email,
                                                     secret_key=secret_key)
    if member_id and not form.member_id:
        form = replace(form, member_id=member_id)
    return NewAction(action_id, ask, form, ref, source, region_id, group_id, constituency, now)


def publishes_pledge(previous: str | None, decision: str) -> bool:
    """Whether moderating a pledge publishes it (PledgePublished): approved now, and not approved before."""
    return decision == "approved" and previous != "approved"


def attend_action_id(ask_id: str, rsvp_id: str) -> str:
    """An RSVP's action on an attend ask: the same id however often the RSVP arrives."""
    return str(uuid.uuid5(ATTEND_NAMESPACE, f"{ask_id}:{rsvp_id}"))


def place_of(region_id: str | None, group_ids: Sequence[str] | None) -> tuple[str | None, str | None]:
    """Where a member's action counts: their region and their first group."""
    return region_id, (group_ids[0] if group_ids else None)


def render_letter(template: str, **values: str) -> str:
    """Fill `{mp_name}`, `{constituency}`, `{name}`, `{postcode}`; anything else in braces stays as typed."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        return (values.get(key) or match.group(0)) if key in LETTER_PLACEHOLDERS else match.group(0)

    return re.sub(r"\{(\w+)\}", fill, template)


# The MP dataset ---------------------------------------------------------------------------------------
MP_CSV_COLUMNS = ("postcode", "constituency_code", "constituency_name", "mp_name", "mp_party", "mp_email")


@dataclass(frozen=True)
class Constituency:
    code: str
    name: str
    mp_name: str
    mp_party: str
    mp_email: str


def parse_mp_csv(text: str) -> tuple[dict[str, Constituency], dict[str, str]]:
    """The organisers' dataset: constituencies by code and postcode keys (unit, sector, district or area) to codes.

    Raises InvalidInput naming the lines that are wrong, so an organiser can fix the file.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [c for c in MP_CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidInput({"file": f"The file needs the columns {', '.join(MP_CSV_COLUMNS)}; missing: "
                                    f"{', '.join(missing)}"})
    constituencies: dict[str, Constituency] = {}
    postcodes: dict[str, str] = {}
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        code = collapse_spaces(row.get("constituency_code"))
        name = collapse_spaces(row.get("constituency_name"))
        mp_name = collapse_spaces(row.get("mp_name"))
        email = normalise_email(row.get("mp_email") or "")
        key = normalise_postcode(row.get("postcode") or "")
        if not (code and name and mp_name and key):
            problems.append(f"line {line}: postcode, constituency_code, constituency_name and mp_name are needed")
            continue
        if email and not EMAIL_RE.match(email):
            problems.append(f"line {line}: mp_email is not an email address")
            continue
        c = Constituency(code, name, mp_name, collapse_spaces(row.get("mp_party")), email)
        if code in constituencies and constituencies[code] != c:
            problems.append(f"line {line}: constituency {code} is described differently on an earlier line")
            continue
        constituencies[code] = c
        if key in postcodes and postcodes[key] != code:
            problems.append(f"line {line}: postcode {key} is already given to constituency {postcodes[key]}")
            continue
        postcodes[key] = code
    if problems:
        raise InvalidInput({"file": "; ".join(problems[:20])})
    if not constituencies:
        raise InvalidInput({"file": "The file has no constituencies"})
    return constituencies, postcodes


# The engagement ladder --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LadderRung:
    """A level and what reaches it: at least these many actions, meetings attended and both together, or a role."""

    level: str
    label: str
    min_actions: int = 0
    min_attended: int = 0
    min_total: int = 0
    roles: tuple[str, ...] = ()

    def reached(self, actions: int, attended: int, roles: Iterable[str]) -> bool:
        if self.roles and set(self.roles) & set(roles):
            return True
        return actions >= self.min_actions and attended >= self.min_attended and actions + attended >= self.min_total

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "label": self.label, "min_actions": self.min_actions,
                "min_attended": self.min_attended, "min_total": self.min_total, "roles": list(self.roles)}

    @classmethod
    def of(cls, r: Mapping[Any, Any]) -> LadderRung:
        """A rung from its stored form: a row of engagement_ladder, or `as_dict` kept as JSON."""
        return cls(r["level"], r["label"], r["min_actions"], r["min_attended"], r["min_total"], tuple(r["roles"]))


DEFAULT_LADDER: tuple[LadderRung, ...] = (
    LadderRung("supporter", "Supporter"),
    LadderRung("participant", "Participant", min_total=1),
    LadderRung("activist", "Activist", min_actions=3, min_attended=1),
    LadderRung("organiser", "Organiser", min_actions=5, min_attended=3,
               roles=("organiser", "subteam_lead", "constituency_rep")),
)


MAX_THRESHOLD = 1_000_000  # actions or meetings a level can ask for (the columns are 32-bit)
MAX_LEVELS = 20


def validate_ladder(raw: Sequence[dict[str, Any]]) -> tuple[LadderRung, ...]:
    """A ladder as an organiser wrote it: two or more distinct levels, lowest first, the first open to everyone."""
    errors: dict[str, str] = {}
    rungs: list[LadderRung] = []
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes) or len(raw) < 2:
        raise InvalidInput({"levels": "Give at least two levels, lowest first"})
    if len(raw) > MAX_LEVELS:
        raise InvalidInput({"levels": f"A ladder has at most {MAX_LEVELS} levels"})
    for i, r in enumerate(raw):
        try:
            level = re.sub(r"[^a-z0-9_]", "_", collapse_spaces(r.get("level")).lower())[:40]
            rung = LadderRung(
                level=level,
                label=collapse_spaces(r.get("label")) or level.capitalize(),
                min_actions=int(r.get("min_actions") or 0),
                min_attended=int(r.get("min_attended") or 0),
                min_total=int(r.get("min_total") or 0),
                roles=tuple(collapse_spaces(x) for x in r.get("roles") or [] if collapse_spaces(x)),
            )
        except (AttributeError, TypeError, ValueError):
            errors[f"levels[{i}]"] = "Each level needs a name and whole numbers for its thresholds"
            continue
        if not rung.level:
            errors[f"levels[{i}]"] = "Each level needs a name"
        if min(rung.min_actions, rung.min_attended, rung.min_total) < 0:
            errors[f"levels[{i}]"] = "Thresholds cannot be negative"
        if max(rung.min_actions, rung.min_attended, rung.min_total) > MAX_THRESHOLD:
            errors[f"levels[{i}]"] = f"Thresholds can be at most {MAX_THRESHOLD:,}"
        if len(rung.label) > 80 or any(len(x) > 40 for x in rung.roles):
            errors[f"levels[{i}]"] = "Names of levels can be at most 80 characters, and of roles 40"
        rungs.append(rung)
    if len({r.level for r in rungs}) != len(rungs):
        errors["levels"] = "Each level must have its own name"
    if rungs and (rungs[0].min_actions or rungs[0].min_attended or rungs[0].min_total):
        errors["levels"] = "The first level is where everyone starts: it cannot have thresholds"
    if errors:
        raise InvalidInput(errors)
    return tuple(rungs)


def level_for(ladder: Sequence[LadderRung], *, actions: int, attended: int, roles: Iterable[str] = ()) -> str:
    """The highest level whose rule the member meets (the first level always)."""
    roles = list(roles)
    level = ladder[0].level
    for rung in ladder[1:]:
        if rung.reached(actions, attended, roles):
            level = rung.level
    return level


@dataclass(frozen=True)
class Standing:
    """A member's place on the ladder as last stored: their level (None before the first), what it counted, roles."""

    member_id: str
    level: str | None
    actions: int = 0
    attended: int = 0
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Assessment:
    """A member's standing after counting their facts again: what to store, and the event to publish, if any."""

    actions: int
    attended: int
    level: str
    level_changed: bool
    counts_changed: bool
    event: ev.EngagementLevelChanged | None = None


def assess(standing: Standing, *, actions: int, attended: int, ladder: Sequence[LadderRung],
           reason: str = "") -> Assessment:
    """The level a member's actions, meetings attended and roles now reach. A move is published, with `reason` or
    the counts as why, except a new member's first level at the bottom of the ladder (where everyone starts)."""
    level = level_for(ladder, actions=actions, attended=attended, roles=standing.roles)
    changed = level != standing.level
    event = None
    if changed and (standing.level is not None or level != ladder[0].level):
        why = reason or f"{actions} action{'s' if actions != 1 else ''}, {attended} meeting" \
                        f"{'s' if attended != 1 else ''} attended"
        event = ev.EngagementLevelChanged(member_id=standing.member_id, level=level,
                                          previous_level=standing.level, reason=why)
    return Assessment(actions, attended, level, changed,
                      (actions, attended) != (standing.actions, standing.attended), event)


def place_changes(e: ev.MemberProfileUpdated) -> dict[str, Any]:
    """The places (region, groups, sub-teams) a profile update changes, by column."""
    values: dict[str, Any] = {}
    changed = set(e.changed)
    if {"region_id", "region"} & changed:
        values["region_id"] = e.region_id
    if {"group_ids", "groups"} & changed:
        values["group_ids"] = e.group_ids
    if {"subteam_ids", "subteams"} & changed:
        values["subteam_ids"] = e.subteam_ids
    return values
