"""Membership's rules, with no I/O: who a joiner is, what makes a join valid, what events it raises."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
UK_POSTCODE_RE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$")

MAX_NAME = 120
MAX_EMAIL = 254
MAX_SHORT = 500

CONSENT_WORDING_VERSION = "email-2026-11"
CONSENT_WORDING = (
    "I agree that the network may email me about its campaigns, meetings and ways to get involved. "
    "I can unsubscribe at any time with one click."
)

DEFAULT_ENGAGEMENT_LEVELS: tuple[tuple[str, str], ...] = (
    ("informed", "Keep me informed"),
    ("take_action", "I'll take action"),
    ("organise", "I'll help organise"),
)


def normalise_email(raw: str) -> str:
    """Case and spaces do not make a different person: ` Ada@Example.ORG ` is `ada@example.org`."""
    return unicodedata.normalize("NFC", raw).strip().lower()


def normalise_postcode(raw: str) -> str:
    compact = re.sub(r"\s+", "", raw.upper())
    return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact


@dataclass
class JoinApplication:
    """What a person typed into a join form, validated."""

    name: str
    email: str
    postcode: str
    email_consent: bool
    engagement_level: str = "informed"
    interests: list[str] = field(default_factory=list)
    source: str = "join-form"

    @property
    def email_normalised(self) -> str:
        return normalise_email(self.email)


class InvalidJoin(ValueError):
    """A join form that cannot be accepted; `errors` maps each field to what a person should fix."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def validate_join(
    *,
    name: str,
    email: str,
    postcode: str,
    email_consent: bool,
    engagement_level: str = "informed",
    interests: list[str] | None = None,
    source: str = "join-form",
    allowed_levels: tuple[str, ...] = tuple(k for k, _ in DEFAULT_ENGAGEMENT_LEVELS),
) -> JoinApplication:
    errors: dict[str, str] = {}
    name = " ".join(name.split())
    email_n = normalise_email(email)
    postcode_n = normalise_postcode(postcode or "")
    if not name:
        errors["name"] = "Enter your name"
    elif len(name) > MAX_NAME:
        errors["name"] = f"Name must be {MAX_NAME} characters or fewer"
    if not email_n:
        errors["email"] = "Enter your email address"
    elif len(email_n) > MAX_EMAIL or not EMAIL_RE.match(email_n):
        errors["email"] = "Enter an email address in the correct format, like name@example.org"
    if not postcode_n:
        errors["postcode"] = "Enter your postcode"
    elif not UK_POSTCODE_RE.match(postcode_n):
        errors["postcode"] = "Enter a real UK postcode, like B1 1AA"
    if not email_consent:
        errors["email_consent"] = "Tick the box to agree that we may email you: we need it to welcome you"
    if engagement_level not in allowed_levels:
        errors["engagement_level"] = "Choose how involved you want to be"
    if errors:
        raise InvalidJoin(errors)
    return JoinApplication(
        name=name,
        email=email_n,
        postcode=postcode_n,
        email_consent=True,
        engagement_level=engagement_level,
        interests=list(interests or []),
        source=source[:MAX_SHORT],
    )
