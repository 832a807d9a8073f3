"""Membership's rules, with no I/O: what makes a join valid, where a postcode places someone, what joining
again does to a member's record and which events it raises, and how the engagement ladder's level is recorded.

The choices a join form offers (interests, levels of engagement, groups, sub-teams, partner
organisations, consent wordings) are configuration stored in tables; the service layer loads them
into `JoinOptions` and the rules here check a form against them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from shared.contact import UK_POSTCODE_RE, collapse_spaces, normalise_email, normalise_postcode, person_problems
from shared.crypto import encode_key, seal
from shared.errors import InvalidInput
from shared.events.catalog import (
    ConsentChanged,
    EngagementLevelChosen,
    MemberJoined,
    MemberProfileUpdated,
    SubjectKeyIssued,
)
from shared.events.envelope import EventData, Sealed

SOURCE_RE = re.compile(r"^[A-Za-z0-9._:/@+-]{1,100}$")

MAX_SKILLS = 1000
MAX_TIME = 200
MAX_ORGANISATION = 200
MAX_CHOICES = 50  # of any multiple choice: more is not a person filling a form
MAX_SHORT = 500

DEFAULT_SOURCE = "join-form"
API_SOURCE_PREFIX = "api:"  # a person added or changed through the API: "api:<the key's id>"


def api_source(key_id: str | None) -> str:
    """The source recorded for what an API key added or changed."""
    return f"{API_SOURCE_PREFIX}{key_id}"


def api_key_of(source: str) -> str | None:
    """The API key's id of an `api_source`, or None for any other source."""
    if not source.startswith(API_SOURCE_PREFIX):
        return None
    return source.removeprefix(API_SOURCE_PREFIX) or None
OWNER = "membership"  # the owner named in what membership seals with its members' keys


@dataclass(frozen=True)
class Choice:
    """One option of a configurable list (an interest, a level of engagement)."""

    key: str
    label: str


@dataclass(frozen=True)
class Unit:
    """A region, local group, sub-team or partner organisation."""

    id: str
    slug: str
    name: str
    parent_id: str | None = None  # a group's region


@dataclass(frozen=True)
class JoinOptions:
    """What the join form offers right now, loaded from the configuration tables."""

    interests: tuple[Choice, ...]
    levels: tuple[Choice, ...]
    regions: tuple[Unit, ...]
    groups: tuple[Unit, ...]
    subteams: tuple[Unit, ...]
    partners: tuple[Unit, ...]
    consent_version: str
    consent_wording: str
    consent_versions: frozenset[str]  # every version ever shown (an embedded form may show an older one)
    postcode_prefixes: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)

    def resolve(self, units: tuple[Unit, ...], ref: str) -> Unit | None:
        """A unit by its id or its slug."""
        for unit in units:
            if ref in (unit.id, unit.slug):
                return unit
        return None

    def unit_name(self, unit_id: str | None) -> str | None:
        for unit in (*self.regions, *self.groups, *self.subteams, *self.partners):
            if unit.id == unit_id:
                return unit.name
        return None


def place(postcode: str | None, prefixes: Mapping[str, tuple[str, str | None]]) -> tuple[str | None, str | None]:
    """(region id, nearest group id) for a postcode: the longest matching outward code or area wins."""
    if not postcode:
        return None, None
    outward = postcode.split(" ")[0] if " " in postcode else postcode[:-3]
    area = re.match(r"[A-Z]+", outward)
    for candidate in (outward, area.group(0) if area else None):
        if candidate and candidate in prefixes:
            return prefixes[candidate]
    return None, None


def given_and_family(name: str, given: str | None, family: str | None) -> tuple[str, str]:
    """A member's given and family names: as an integration sent them, or (for a name typed whole into a
    form) the display name split at its last space, which is only a guess."""
    if given is not None or family is not None:
        return given or "", family or ""
    head, _, tail = name.rpartition(" ")
    return (head, tail) if head else (name, "")


def display_name(given: str, family: str) -> str:
    """The one name the rest of the system shows, from given and family names."""
    return collapse_spaces(f"{given} {family}")


@dataclass
class JoinApplication:
    """What a person typed into a join form, validated and resolved to ids."""

    name: str
    email: str
    postcode: str | None
    email_consent: bool
    consent_version: str
    engagement_level: str
    interests: list[str] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)
    subteam_ids: list[str] = field(default_factory=list)
    region_id: str | None = None
    suggested_group_id: str | None = None
    skills: str | None = None
    time_available: str | None = None
    organisation_id: str | None = None
    organisation_name: str | None = None
    source: str = DEFAULT_SOURCE
    site: str | None = None  # the origin of the site that hosted an embedded form
    # A join form replaces name, postcode and level; a join that comes with an RSVP or an action only fills
    # in what is missing, so signing up to a meeting never lowers the level someone chose.
    replace_profile: bool = True
    # "Tell us more" after a join: it adds to what the member told us (lists grow; skills, time and organisation
    # are set) and changes nothing else: not their name, postcode, level or consent, and never brings back
    # someone who left.
    adds_only: bool = False

    @property
    def email_normalised(self) -> str:
        return normalise_email(self.email)


@dataclass
class JoinForm:
    """A join form as submitted (HTML form or JSON): strings and lists of strings, nothing checked yet."""

    name: str = ""
    email: str = ""
    postcode: str = ""
    email_consent: bool = False
    consent_version: str = ""
    engagement_level: str = ""
    interests: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    subteams: list[str] = field(default_factory=list)
    region: str = ""
    skills: str = ""
    time_available: str = ""
    organisation: str = ""
    organisation_name: str = ""
    source: str = ""


class InvalidJoin(InvalidInput):
    """A join form that cannot be accepted; `errors` maps each field to what a person should fix."""


@dataclass(frozen=True)
class JoinExtras:
    """What someone chose to tell us beyond the short join (interests, groups, sub-teams, skills, time, organisation),
    validated and resolved to ids: on the thank-you page's "tell us more", or with the join itself (as JSON, or
    from another site's form)."""

    interests: list[str] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)
    subteam_ids: list[str] = field(default_factory=list)
    skills: str | None = None
    time_available: str | None = None
    organisation_id: str | None = None
    organisation_name: str | None = None

    @property
    def anything(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


def _resolved(refs: list[str], units: tuple[Unit, ...], options: JoinOptions) -> list[str] | None:
    """The ids of units chosen by id or slug; None when one is not on the list (or too many are chosen)."""
    ids = []
    for ref in refs:
        unit = options.resolve(units, ref)
        if unit is None:
            return None
        ids.append(unit.id)
    return ids if len(refs) <= MAX_CHOICES else None


def validate_extras(form: JoinForm, options: JoinOptions, errors: dict[str, str]) -> JoinExtras:
    """The "tell us more" fields of a form, checked against the configured choices; problems go in `errors`."""
    interests = _unique(form.interests)
    known_interests = {c.key for c in options.interests}
    if len(interests) > MAX_CHOICES or any(i not in known_interests for i in interests):
        errors["interests"] = "Choose the issues you care about from the list"
    group_ids = _resolved(_unique(form.groups), options.groups, options)
    if group_ids is None:
        errors["groups"] = "Choose local groups from the list"
    subteam_ids = _resolved(_unique(form.subteams), options.subteams, options)
    if subteam_ids is None:
        errors["subteams"] = "Choose sub-teams from the list"
    organisation_id = None
    if form.organisation.strip():
        partner = options.resolve(options.partners, form.organisation.strip())
        if partner is None:
            errors["organisation"] = "Choose your organisation from the list, or leave it empty"
        else:
            organisation_id = partner.id
    organisation_name = collapse_spaces(form.organisation_name) or None
    if organisation_name and len(organisation_name) > MAX_ORGANISATION:
        errors["organisation_name"] = f"The organisation's name must be {MAX_ORGANISATION} characters or fewer"
    skills = form.skills.strip() or None
    if skills and len(skills) > MAX_SKILLS:
        errors["skills"] = f"Skills must be {MAX_SKILLS} characters or fewer"
    time_available = collapse_spaces(form.time_available) or None
    if time_available and len(time_available) > MAX_TIME:
        errors["time_available"] = f"Time you can give must be {MAX_TIME} characters or fewer"
    return JoinExtras(
        interests=interests,
        group_ids=group_ids or [],
        subteam_ids=subteam_ids or [],
        skills=skills,
        time_available=time_available,
        organisation_id=organisation_id,
        organisation_name=organisation_name,
    )


def _unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        v = v.strip()
        if v:
            seen.setdefault(v, None)
    return list(seen)


def validate_join(
    form: JoinForm, options: JoinOptions, *, require_postcode: bool = True, site: str | None = None
) -> JoinApplication:
    """Check a join form against the rules and the configured choices; raise `InvalidJoin` with every problem."""
    name = collapse_spaces(form.name)
    email_n = normalise_email(form.email)
    postcode_n = normalise_postcode(form.postcode)
    errors = person_problems(name, email_n)
    if not postcode_n:
        if require_postcode:
            errors["postcode"] = "Enter your postcode"
    elif not UK_POSTCODE_RE.match(postcode_n):
        errors["postcode"] = "Enter a real UK postcode, like B1 1AA"
    if not form.email_consent:
        errors["email_consent"] = "Tick the box to agree that we may email you: we need it to welcome you"
    consent_version = form.consent_version.strip() or options.consent_version
    if consent_version not in options.consent_versions:
        errors["email_consent"] = "This form shows a consent statement we do not know: reload the page and try again"

    level = form.engagement_level.strip() or (options.levels[0].key if options.levels else "")
    if level not in {c.key for c in options.levels}:
        errors["engagement_level"] = "Choose how involved you want to be"

    extras = validate_extras(form, options, errors)

    region_id, suggested_group_id = place(postcode_n or None, options.postcode_prefixes)
    if form.region.strip():
        region = options.resolve(options.regions, form.region.strip())
        if region is None:
            errors["region"] = "This form names a region we do not know"
        else:
            region_id = region.id

    source = form.source.strip() or DEFAULT_SOURCE
    if not SOURCE_RE.match(source):
        errors["source"] = "This form's source must be up to 100 letters, digits or . _ : / @ + -"

    if errors:
        raise InvalidJoin(errors)
    # Nobody chose a group: they join the one nearest to them (and may leave it from their preferences).
    group_ids = extras.group_ids or ([suggested_group_id] if suggested_group_id else [])
    return JoinApplication(
        name=name,
        email=email_n,
        postcode=postcode_n or None,
        email_consent=True,
        consent_version=consent_version,
        engagement_level=level,
        interests=extras.interests,
        group_ids=group_ids,
        subteam_ids=extras.subteam_ids,
        region_id=region_id,
        suggested_group_id=suggested_group_id,
        skills=extras.skills,
        time_available=extras.time_available,
        organisation_id=extras.organisation_id,
        organisation_name=extras.organisation_name,
        source=source,
        site=site,
    )


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, or None."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def merged(existing: Iterable[str], added: Iterable[str]) -> list[str]:
    """Joining again adds to what someone chose before; it never removes (that is what preferences are for)."""
    return _unique([*existing, *added])


# -- members' own choices --------------------------------------------------------------------------

# Kinds of email a member can choose between (notifications sends each only to those who want it).
EMAIL_TOPICS: tuple[Choice, ...] = (
    Choice("meetings", "Meetings and events near me"),
    Choice("follow_ups", "What happened after I took action, and what to do next"),
)
MAX_REASON = 500


@dataclass
class PreferencesForm:
    """The preferences page as submitted."""

    email_consent: bool = True
    email_topics: list[str] = field(default_factory=list)
    engagement_level: str = ""
    interests: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    subteams: list[str] = field(default_factory=list)


@dataclass
class Preferences:
    """A member's choices, validated: these replace what was there (unlike joining again, which adds)."""

    email_consent: bool
    email_topics: list[str] | None  # None: every kind
    engagement_level: str
    interests: list[str]
    group_ids: list[str]
    subteam_ids: list[str]


def validate_preferences(form: PreferencesForm, options: JoinOptions) -> Preferences:
    errors: dict[str, str] = {}
    topics = _unique(form.email_topics)
    if any(t not in {c.key for c in EMAIL_TOPICS} for t in topics):
        errors["email_topics"] = "Choose the kinds of email from the list"
    if form.engagement_level not in {c.key for c in options.levels}:
        errors["engagement_level"] = "Choose how involved you want to be"
    interests = _unique(form.interests)
    if len(interests) > MAX_CHOICES or any(i not in {c.key for c in options.interests} for i in interests):
        errors["interests"] = "Choose the issues you care about from the list"
    group_ids, subteam_ids = [], []
    for ref in _unique(form.groups)[: MAX_CHOICES + 1]:
        unit = options.resolve(options.groups, ref)
        if unit is None:
            errors["groups"] = "Choose local groups from the list"
        else:
            group_ids.append(unit.id)
    for ref in _unique(form.subteams)[: MAX_CHOICES + 1]:
        unit = options.resolve(options.subteams, ref)
        if unit is None:
            errors["subteams"] = "Choose sub-teams from the list"
        else:
            subteam_ids.append(unit.id)
    if errors:
        raise InvalidJoin(errors)
    every_topic = set(topics) == {c.key for c in EMAIL_TOPICS}
    return Preferences(
        email_consent=form.email_consent and bool(topics),  # no kind of email wanted is no email at all
        email_topics=None if every_topic else topics,
        engagement_level=form.engagement_level,
        interests=interests,
        group_ids=group_ids,
        subteam_ids=subteam_ids,
    )


# -- joining, and joining again ----------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRecord:
    """A stored member as the joining rules see it (loaded, locked, by the use case)."""

    id: str
    name: str
    postcode: str | None
    region_id: str | None
    suggested_group_id: str | None
    engagement_level: str
    interests: list[str]
    organisation_id: str | None
    status: str  # pending confirmed left erased
    confirmed_at: datetime | None
    email_consent: bool
    group_ids: list[str] = field(default_factory=list)
    subteam_ids: list[str] = field(default_factory=list)


def new_member_row(
    member_id: str, application: JoinApplication, now: datetime, *, double_opt_in: bool
) -> dict[str, Any]:
    """The `members` row of someone whose address is not a member (a new address, or one whose member was erased:
    erasure deletes the address, so it joins as a new person with a new id and key)."""
    return {
        "id": member_id,
        "email_normalised": application.email_normalised,
        "name": application.name,
        "postcode": application.postcode,
        "region_id": application.region_id,
        "suggested_group_id": application.suggested_group_id,
        "engagement_level": application.engagement_level,
        "interests": application.interests,
        "skills": application.skills,
        "time_available": application.time_available,
        "organisation_id": application.organisation_id,
        "organisation_name": application.organisation_name,
        "status": "pending" if double_opt_in else "confirmed",
        "confirmed_at": None if double_opt_in else now,
        "email_consent": application.email_consent,
        "source": application.source,
        "joined_at": now,
        "updated_at": now,
    }


def joined_events(
    member_id: str,
    key: bytes,
    profile: Any,
    group_ids: list[str],
    subteam_ids: list[str],
    *,
    consent_version: str,
    source: str,
    confirm: bool,
    now: datetime,
    email_hash: str | None = None,
) -> list[EventData]:
    """The member's key and MemberJoined, personal data sealed with that key; `profile` is a JoinApplication or a
    stored member row; `email_hash`: the address's keyed hash (shared/contact.py address_hash), by which other
    services link what was done with the address to the member."""

    def sealed(value: str) -> Any:
        return seal(value, key, key_id=member_id, owner=OWNER)

    return [
        SubjectKeyIssued(key_id=member_id, key=encode_key(key)),
        MemberJoined(
            member_id=member_id,
            email=sealed(profile.email_normalised),
            name=sealed(profile.name),
            postcode=sealed(profile.postcode) if profile.postcode else None,
            region_id=profile.region_id,
            group_ids=group_ids,
            suggested_group_id=profile.suggested_group_id,
            subteam_ids=subteam_ids,
            interests=list(profile.interests),
            engagement_level=profile.engagement_level,
            organisation_id=profile.organisation_id,
            email_consent=profile.email_consent,
            consent_wording_version=consent_version,
            source=source,
            confirmation_required=confirm,
            joined_at=now,
            email_hash=email_hash,
        ),
    ]


@dataclass(frozen=True)
class Rejoin:
    """What a join does to someone who is a member already (or was, and left): the record's new values, the
    groups and sub-teams to add, and what to announce."""

    member_id: str
    values: dict[str, Any]  # the `members` columns to set
    add_group_ids: list[str]
    add_subteam_ids: list[str]
    # Back after leaving: MemberJoined again from the updated record, so everyone who forgot them learns them
    # again (no second welcome: the same member). Otherwise the events below.
    back_after_leaving: bool
    changed: list[str]  # the profile's fields that changed (MemberProfileUpdated), in the event's order
    group_ids: list[str]  # the profile's groups and sub-teams as MemberProfileUpdated tells them
    subteam_ids: list[str]
    previous_level: str
    previous_region_id: str | None
    previous_organisation_id: str | None
    consent_regained: bool
    consent_version: str
    source: str

    @property
    def confirmation_required(self) -> bool:
        return self.values.get("status") == "pending"

    @property
    def changes_anything(self) -> bool:
        """Whether the member's record would be any different (beyond its `updated_at`)."""
        return bool(self.changed) or self.back_after_leaving or self.consent_regained

    @property
    def name_changed(self) -> bool:
        """The announcement carries the new name, sealed with the member's key (which the caller holds)."""
        return "name" in self.changed

    def events(self, sealed_name: Sealed | None = None) -> list[EventData]:
        """One event per kind of change, none if nothing changed (`sealed_name`: the new name, if it changed)."""
        if self.back_after_leaving:
            return []
        events: list[EventData] = []
        level = self.values["engagement_level"]
        if self.changed:
            events.append(
                MemberProfileUpdated(
                    member_id=self.member_id,
                    changed=self.changed,
                    name=sealed_name if self.name_changed else None,
                    region_id=self.values.get("region_id", self.previous_region_id),
                    group_ids=self.group_ids,
                    subteam_ids=self.subteam_ids,
                    interests=self.values["interests"],
                    engagement_level=level,
                    organisation_id=self.values.get("organisation_id", self.previous_organisation_id),
                )
            )
        if self.previous_level != level:
            events.append(
                EngagementLevelChosen(member_id=self.member_id, level=level, previous_level=self.previous_level)
            )
        if self.consent_regained:
            events.append(
                ConsentChanged(
                    member_id=self.member_id, granted=True, wording_version=self.consent_version, source=self.source
                )
            )
        return events


def rejoin(previous: MemberRecord, application: JoinApplication, now: datetime, *, double_opt_in: bool) -> Rejoin:
    """Joining again updates the member; lists only grow. A join form replaces name and level; a join that comes
    with an RSVP or an action only fills in what is missing and, where the member's postcode is known, does not
    move them. Someone who had left is back (confirmed again if they had confirmed before)."""
    new_subteams = merged(previous.subteam_ids, application.subteam_ids)
    new_interests = merged(previous.interests, application.interests)
    values: dict[str, Any] = {
        "name": application.name,
        "engagement_level": application.engagement_level,
        "interests": new_interests,
        "updated_at": now,
    }
    postcode, region_id, add_groups = application.postcode, application.region_id, application.group_ids
    if application.adds_only:
        values.update(name=previous.name, engagement_level=previous.engagement_level)
        postcode, region_id = None, None
    elif not application.replace_profile:
        values.update(name=previous.name or application.name, engagement_level=previous.engagement_level)
        if previous.postcode:  # where they live is known already: the RSVP's postcode does not move them
            postcode, region_id, add_groups = None, None, []
    new_groups = merged(previous.group_ids, add_groups)
    if postcode:
        values.update(postcode=postcode, region_id=region_id, suggested_group_id=application.suggested_group_id)
    elif region_id:
        values["region_id"] = region_id
    for name in ("skills", "time_available", "organisation_id", "organisation_name"):
        if getattr(application, name):
            values[name] = getattr(application, name)
    back = previous.status == "left" and not application.adds_only
    if back:
        values.update(status="confirmed" if previous.confirmed_at or not double_opt_in else "pending", left_at=None)
    consent_regained = application.email_consent and not previous.email_consent and not application.adds_only
    if consent_regained:
        values["email_consent"] = True
    changed = [
        field
        for field, old, new in (
            ("name", previous.name, values["name"]),
            ("postcode", previous.postcode, values.get("postcode", previous.postcode)),
            ("region_id", previous.region_id, values.get("region_id", previous.region_id)),
            ("group_ids", previous.group_ids, new_groups),
            ("subteam_ids", previous.subteam_ids, new_subteams),
            ("interests", list(previous.interests), new_interests),
            ("engagement_level", previous.engagement_level, values["engagement_level"]),
            ("organisation_id", previous.organisation_id, values.get("organisation_id", previous.organisation_id)),
        )
        if old != new
    ]
    return Rejoin(
        member_id=previous.id,
        values=values,
        add_group_ids=list(add_groups),
        add_subteam_ids=list(application.subteam_ids),
        back_after_leaving=back,
        changed=changed,
        group_ids=new_groups,
        subteam_ids=new_subteams,
        previous_level=previous.engagement_level,
        previous_region_id=previous.region_id,
        previous_organisation_id=previous.organisation_id,
        consent_regained=consent_regained,
        consent_version=application.consent_version,
        source=application.source,
    )


# -- requests the member confirms through a link emailed to them (decision 0006) ----------------------

JOIN_CHANGE, DOWNLOAD, ERASE = "join-change", "download", "erase"
# How long a request (and the link emailed for it) lasts: a join's changes a week, a download or an erasure asked
# for through a long-lived preferences link half an hour.
REQUEST_LIFETIME = {JOIN_CHANGE: timedelta(days=7), DOWNLOAD: timedelta(minutes=30), ERASE: timedelta(minutes=30)}
# What a waiting join holds sealed with the member's key; the rest is ids and choices.
PERSONAL_JOIN_FIELDS = ("name", "postcode", "skills", "time_available", "organisation_name")


def asks_first(application: JoinApplication, decision: Rejoin) -> bool:
    """Whether a join for a member's address is recorded and the member asked to confirm it. A join form always
    is (the person was told to look for an email); a join that came with an RSVP or an action only when it would
    change something (it has its own email)."""
    return application.replace_profile or decision.changes_anything


def join_details(application: JoinApplication) -> tuple[dict[str, Any], dict[str, str]]:
    """A join to keep until it is confirmed: (its ids and choices, its personal fields to seal). The address is
    the member's own, so it is not kept."""
    plain = {k: v for k, v in asdict(application).items() if k not in (*PERSONAL_JOIN_FIELDS, "email")}
    personal = {k: getattr(application, k) for k in PERSONAL_JOIN_FIELDS if getattr(application, k)}
    return plain, personal


def join_from_details(plain: Mapping[str, Any], personal: Mapping[str, str], email: str) -> JoinApplication:
    """The join `join_details` kept, whole again (fields added to JoinApplication later take their defaults)."""
    known = {f.name for f in fields(JoinApplication)}
    values = {k: v for k, v in plain.items() if k in known}
    values.update({k: personal.get(k) for k in PERSONAL_JOIN_FIELDS})
    values["name"] = values["name"] or ""
    return JoinApplication(email=email, **values)


def with_extras(application: JoinApplication, extras: JoinExtras) -> JoinApplication:
    """A join with what its "tell us more" added: lists grow, skills, time and organisation given replace."""
    return replace(
        application,
        interests=merged(application.interests, extras.interests),
        group_ids=merged(application.group_ids, extras.group_ids),
        subteam_ids=merged(application.subteam_ids, extras.subteam_ids),
        **{
            name: getattr(extras, name)
            for name in ("skills", "time_available", "organisation_id", "organisation_name")
            if getattr(extras, name)
        },
    )


def extras_join(member: Any, extras: JoinExtras, *, consent_version: str) -> JoinApplication:
    """A "tell us more" on its own, as a join that only adds (`member`: their stored row), for the member to
    confirm by email like any join for their address."""
    return with_extras(
        JoinApplication(
            name=member.name,
            email=member.email_normalised,
            postcode=None,
            email_consent=member.email_consent,
            consent_version=consent_version,
            engagement_level=member.engagement_level,
            adds_only=True,
        ),
        extras,
    )


# What becomes of a "tell us more" sent from a join's thank-you page.
TELL_DIRECTLY, TELL_BY_EMAIL, TELL_NOBODY = "directly", "by-email", "nobody"


def tell_more_route(*, new_member: bool, status: str | None, confirmed_at: datetime | None, since: datetime) -> str:
    """A member the join created (`new_member`) is told more at once while nobody has confirmed the address since
    the join (`since`): their record is still only the joiner's word, as it was when the long form asked
    everything. Anyone else (a member's address, or an address confirmed since) confirms it through a link emailed
    to the address, like any join for it (decision 0006). Nobody left or erased is changed."""
    if status in (None, "left", "erased"):
        return TELL_NOBODY
    if new_member and (confirmed_at is None or confirmed_at <= since):
        return TELL_DIRECTLY
    return TELL_BY_EMAIL


def change_summary(previous: MemberRecord, decision: Rejoin, options: JoinOptions) -> list[tuple[str, str]]:
    """What confirming a join would change, in words, for the page the emailed link opens."""
    values = decision.values
    lines: list[tuple[str, str]] = []
    if decision.back_after_leaving:
        lines.append(("Your membership", "You join the network again"))
    if "name" in decision.changed:
        lines.append(("Your name", values["name"]))
    if "postcode" in decision.changed:
        lines.append(("Your postcode", values["postcode"]))
    if "region_id" in decision.changed:
        lines.append(("Your region", options.unit_name(values.get("region_id")) or "None"))

    def added(label: str, old: Iterable[str], new: Iterable[str], name: Any) -> None:
        extra = [name(x) for x in new if x not in set(old)]
        if extra:
            lines.append((label, ", ".join(extra)))

    added("Local groups you join", previous.group_ids, decision.group_ids, lambda x: options.unit_name(x) or x)
    added("Sub-teams you join", previous.subteam_ids, decision.subteam_ids, lambda x: options.unit_name(x) or x)
    labels = {c.key: c.label for c in options.interests}
    added("Issues you care about", previous.interests, values["interests"], lambda x: labels.get(x, x))
    if "engagement_level" in decision.changed:
        level = values["engagement_level"]
        lines.append(("How involved you want to be", {c.key: c.label for c in options.levels}.get(level, level)))
    if "organisation_id" in decision.changed:
        lines.append(("Your organisation", options.unit_name(values.get("organisation_id")) or "None"))
    for name, label in (("skills", "Your skills"), ("time_available", "Time you can give")):
        if values.get(name):
            lines.append((label, values[name]))
    if decision.consent_regained:
        lines.append(("Email from us", "You agree that we may email you again"))
    return lines


# -- the engagement ladder ---------------------------------------------------------------------------


# -- organisers' sign-in: exponential back-off per account ----------------------------------------

SIGNIN_FREE_FAILURES = 5  # wrong tries in a row before the account waits (typos happen)
SIGNIN_FIRST_WAIT_S = 30  # the first wait; each further wrong try doubles it
SIGNIN_MAX_WAIT_S = 3600  # never longer than an hour: the real organiser is not locked out for days
SIGNIN_FORGET_AFTER_S = 24 * 3600  # a day without a wrong try starts the count again


def sign_in_wait_s(failures: int) -> int:
    """How long an account waits after `failures` wrong tries in a row: nothing for the first few, then 30 s,
    doubling with each further one, up to an hour."""
    if failures < SIGNIN_FREE_FAILURES:
        return 0
    return min(SIGNIN_FIRST_WAIT_S * 2 ** min(failures - SIGNIN_FREE_FAILURES, 20), SIGNIN_MAX_WAIT_S)


def failures_so_far(failures: int, last_failure_at: datetime | None, now: datetime) -> int:
    """The wrong tries that still count: forgotten a day after the last one."""
    if last_failure_at is None or (now - last_failure_at).total_seconds() > SIGNIN_FORGET_AFTER_S:
        return 0
    return failures


def ladder_level(status: str | None, level: str, now: datetime) -> dict[str, Any]:
    """Recording the level campaigns observes: the `members` columns to set (none for an erased member or one
    not known here). A member's own choice of involvement (`engagement_level`) stays as they chose."""
    if status is None or status == "erased":
        return {}
    return {"ladder_level": level, "ladder_changed_at": now}
