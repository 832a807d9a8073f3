"""Signed, expiring tokens for links in emails (confirm, preferences, unsubscribe) and sessions.

Every service verifies them locally with SECRET_KEY; the purpose is part of the signature, so a token
made for one purpose is refused for another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from datetime import datetime
from functools import lru_cache
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer


class InvalidToken(ValueError):
    """The token was forged, altered, made for another purpose, or has expired."""


@lru_cache(maxsize=64)
def _serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    # Kept: a fan-out signs three links for each of thousands of members with the same few serializers.
    return URLSafeTimedSerializer(secret_key, salt=f"groundswell:{purpose}")


# A payload's JSON up to this long is signed here, with the HMAC keyed once a purpose and without itsdangerous's try
# at compressing it (which cannot shorten a member's id by the two bytes it must save): a third of the time of
# itsdangerous's signer, made, keyed and tried anew for each (a mailing signs two or three links a member). Longer
# payloads go through itsdangerous as they are.
_UNCOMPRESSED_UP_TO = 64
_TIMESTAMP = struct.Struct(">Q")


@lru_cache(maxsize=64)
def _hmac(secret_key: str, purpose: str) -> hmac.HMAC:
    """itsdangerous's HMAC for the purpose (SHA-1, its key derived as its Signer derives it), keyed once."""
    key = hashlib.sha1(f"groundswell:{purpose}".encode() + b"signer" + secret_key.encode()).digest()
    return hmac.new(key, digestmod=hashlib.sha1)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign(secret_key: str, purpose: str, payload: Any) -> str:
    """A token of `payload` for `purpose`: itsdangerous's URL-safe timed token, byte for byte (a short payload
    written as it is: the same token whenever compressing would not have shortened it)."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    if len(data) > _UNCOMPRESSED_UP_TO:
        return _serializer(secret_key, purpose).dumps(payload)
    # The time as itsdangerous's signer reads it (its method ignores its instance): one clock for every token.
    signed_at = int(TimestampSigner.get_timestamp(None))  # type: ignore[arg-type]
    value = _b64(data) + b"." + _b64(_TIMESTAMP.pack(signed_at).lstrip(b"\x00"))
    mac = _hmac(secret_key, purpose).copy()
    mac.update(value)
    return (value + b"." + _b64(mac.digest())).decode()


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
