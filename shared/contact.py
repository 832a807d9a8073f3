"""Email addresses, UK postcodes and names: one way to validate and normalise them in every service.

Services compare what other services send them (an RSVP's postcode becomes a member's, an action's email
address is hashed to count a person once), so the rules must agree to the letter.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

# Not starting with = + - (or @): an address built to run as a formula when an organiser opens an export.
EMAIL_RE = re.compile(r"^(?![=+\-])[^@\s]+@[^@\s]+\.[^@\s]+$")
UK_POSTCODE_RE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$")
MAX_EMAIL = 254
MAX_NAME = 120


def collapse_spaces(raw: object) -> str:
    """Text as typed, trimmed, with every run of white space one space; None is empty."""
    return " ".join(str(raw or "").split())


def normalise_email(raw: str | None) -> str:
    """Case and spaces do not make a different person: ` Ada@Example.ORG ` is `ada@example.org`."""
    return unicodedata.normalize("NFC", raw or "").strip().lower()


def address_hash(secret_key: str, raw: str | None) -> str:
    """How services recognise one person's address without passing the address around: a keyed hash (HMAC-SHA256,
    keyed with SECRET_KEY) of the normalised address. Membership publishes it on MemberJoined (`email_hash`); events
    and campaigns compute it for the address an RSVP or an action arrives with, and their `person_ref`
    (`email:` + its first 40 characters) is made of it, so rows stored before the person joined can be linked
    to them later (docs/decisions/0008-recognising-a-person-across-services.md)."""
    return hmac.new(secret_key.encode(), normalise_email(raw).encode(), hashlib.sha256).hexdigest()


def address_ref(secret_key: str, raw: str | None) -> str:
    """`email:<hash>`: who an RSVP or an action is for when the person is known only by their address."""
    return address_ref_of(address_hash(secret_key, raw))


def address_ref_of(email_hash: str) -> str:
    """The `person_ref` of rows stored for an address, from its `address_hash` (as MemberJoined carries it)."""
    return f"email:{email_hash[:40]}"


def is_email(address: str) -> bool:
    """Whether a normalised email address looks deliverable and fits the columns that keep it."""
    return len(address) <= MAX_EMAIL and EMAIL_RE.match(address) is not None


def normalise_postcode(raw: str | None) -> str:
    """`b11aa`, ` B1  1AA ` → `B1 1AA`; partial codes (`B1`, `B15 2`) are kept as typed, upper-cased.

    Partial codes stay as they are because the MP dataset keys constituencies by sector and district too.
    """
    compact = re.sub(r"\s+", "", (raw or "").upper())
    if len(compact) >= 5 and compact[-3].isdigit() and compact[-2:].isalpha():
        return f"{compact[:-3]} {compact[-3:]}"
    return collapse_spaces((raw or "").upper())


def person_problems(name: str, email: str) -> dict[str, str]:
    """What is wrong with a name and an email address a person typed (both normalised), field by field."""
    problems: dict[str, str] = {}
    if not name:
        problems["name"] = "Enter your name"
    elif len(name) > MAX_NAME:
        problems["name"] = f"Name must be {MAX_NAME} characters or fewer"
    if not email:
        problems["email"] = "Enter your email address"
    elif not is_email(email):
        problems["email"] = "Enter an email address in the correct format, like name@example.org"
    return problems
