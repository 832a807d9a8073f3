"""Membership's rules, with no I/O: what makes a join valid, where a postcode places someone, who sees whom.

The choices a join form offers (interests, levels of engagement, groups, sub-teams, partner
organisations, consent wordings) are configuration stored in tables; the service layer loads them
into `JoinOptions` and the rules here check a form against them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.contact import UK_POSTCODE_RE, collapse_spaces, normalise_email, normalise_postcode, person_problems
from shared.errors import InvalidInput

SOURCE_RE = re.compile(r"^[A-Za-z0-9._:/@+-]{1,100}$")

MAX_SKILLS = 1000
MAX_TIME = 200
MAX_ORGANISATION = 200
MAX_CHOICES = 50  # of any multiple choice: more is not a person filling a form
MAX_SHORT = 500

DEFAULT_SOURCE = "join-form"


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

    interests = _unique(form.interests)
    known_interests = {c.key for c in options.interests}
    if len(interests) > MAX_CHOICES or any(i not in known_interests for i in interests):
        errors["interests"] = "Choose the issues you care about from the list"

    group_ids: list[str] = []
    refs = _unique(form.groups)
    for ref in refs:
        unit = options.resolve(options.groups, ref)
        if unit is None:
            errors["groups"] = "Choose local groups from the list"
            break
        group_ids.append(unit.id)
    if len(refs) > MAX_CHOICES:
        errors["groups"] = "Choose local groups from the list"

    subteam_ids: list[str] = []
    refs = _unique(form.subteams)
    for ref in refs:
        unit = options.resolve(options.subteams, ref)
        if unit is None:
            errors["subteams"] = "Choose sub-teams from the list"
            break
        subteam_ids.append(unit.id)
    if len(refs) > MAX_CHOICES:
        errors["subteams"] = "Choose sub-teams from the list"

    region_id, suggested_group_id = place(postcode_n or None, options.postcode_prefixes)
    if form.region.strip():
        region = options.resolve(options.regions, form.region.strip())
        if region is None:
            errors["region"] = "This form names a region we do not know"
        else:
            region_id = region.id

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

    source = form.source.strip() or DEFAULT_SOURCE
    if not SOURCE_RE.match(source):
        errors["source"] = "This form's source must be up to 100 letters, digits or . _ : / @ + -"

    if errors:
        raise InvalidJoin(errors)
    # Nobody chose a group: they join the one nearest to them (and may leave it from their preferences).
    if not group_ids and suggested_group_id:
        group_ids = [suggested_group_id]
    return JoinApplication(
        name=name,
        email=email_n,
        postcode=postcode_n or None,
        email_consent=True,
        consent_version=consent_version,
        engagement_level=level,
        interests=interests,
        group_ids=group_ids,
        subteam_ids=subteam_ids,
        region_id=region_id,
        suggested_group_id=suggested_group_id,
        skills=skills,
        time_available=time_available,
        organisation_id=organisation_id,
        organisation_name=organisation_name,
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
