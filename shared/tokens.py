"""Signed, expiring tokens for links in emails (confirm, preferences, unsubscribe) and sessions.

Every service verifies them locally with SECRET_KEY; the purpose is part of the signature, so a token
made for one purpose is refused for another.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class InvalidToken(ValueError):
    """The token was forged, altered, made for another purpose, or has expired."""


@lru_cache(maxsize=64)
def _serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    # Kept: a fan-out signs three links for each of thousands of members with the same few serializers.
    return URLSafeTimedSerializer(secret_key, salt=f"groundswell:{purpose}")


def sign(secret_key: str, purpose: str, payload: Any) -> str:
    return _serializer(secret_key, purpose).dumps(payload)


def verify(secret_key: str, purpose: str, token: str, max_age_s: int) -> Any:
    return verify_with_time(secret_key, purpose, token, max_age_s)[0]


def verify_with_time(secret_key: str, purpose: str, token: str, max_age_s: int) -> tuple[Any, datetime]:
    """The payload and when the token was signed (UTC, whole seconds): a revocation ends tokens signed before it."""
    try:
        payload, signed_at = _serializer(secret_key, purpose).loads(token, max_age=max_age_s, return_timestamp=True)
    except SignatureExpired as exc:
        raise InvalidToken("This link has expired") from exc
    except BadSignature as exc:
        raise InvalidToken("This link is not valid") from exc
    return payload, signed_at


CONFIRM_EMAIL = "confirm-email"
CONFIRM_MAX_AGE_S = 30 * 24 * 3600

# Links membership emails to confirm a request it recorded (payload {"r": request id}); each is single-use (the
# request row goes once it is used, and a newer request of the same kind replaces an older one).
JOIN_CHANGE = "join-change"  # a join for an address that is a member already: confirm the changes
JOIN_CHANGE_MAX_AGE_S = 7 * 24 * 3600
MEMBER_RIGHTS = "member-rights"  # a data download or an erasure asked for through the preferences link
MEMBER_RIGHTS_MAX_AGE_S = 30 * 60
# The link to a gathered data download (payload {"r": request id}), emailed once every service's part arrived.
MEMBER_DATA = "member-data"
MEMBER_DATA_MAX_AGE_S = 24 * 3600

# Links in emails that act for a member without a password. Payload: {"m": member_id}.
# Notifications makes them (List-Unsubscribe, footers); membership, which owns consent, honours them at
# GET/POST /unsubscribe?token=… (RFC 8058 one-click) and GET /preferences?token=….
UNSUBSCRIBE = "unsubscribe"
UNSUBSCRIBE_MAX_AGE_S = 365 * 24 * 3600
PREFERENCES = "preferences"
PREFERENCES_MAX_AGE_S = 90 * 24 * 3600


def member_link(secret_key: str, base_url: str, purpose: str, member_id: str) -> str:
    """An absolute signed link to `/<purpose>?token=…` for one member."""
    return f"{base_url.rstrip('/')}/{purpose}?token={sign(secret_key, purpose, {'m': member_id})}"


# A letter to an MP waits until its writer opens this link (emailed by notifications) and confirms on the page it
# opens (campaigns, GET shows the letter, POST sends it). Payload: {"a": action_id}.
CONFIRM_LETTER = "confirm-letter"
CONFIRM_LETTER_MAX_AGE_S = 7 * 24 * 3600
