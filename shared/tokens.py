"""Signed, expiring tokens for links in emails (confirm, preferences, unsubscribe) and sessions.

Every service verifies them locally with SECRET_KEY; the purpose is part of the signature, so a token
made for one purpose is refused for another.
"""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class InvalidToken(ValueError):
    """The token was forged, altered, made for another purpose, or has expired."""


def _serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=f"groundswell:{purpose}")


def sign(secret_key: str, purpose: str, payload: Any) -> str:
    return _serializer(secret_key, purpose).dumps(payload)


def verify(secret_key: str, purpose: str, token: str, max_age_s: int) -> Any:
    try:
        return _serializer(secret_key, purpose).loads(token, max_age=max_age_s)
    except SignatureExpired as exc:
        raise InvalidToken("This link has expired") from exc
    except BadSignature as exc:
        raise InvalidToken("This link is not valid") from exc


CONFIRM_EMAIL = "confirm-email"
CONFIRM_MAX_AGE_S = 30 * 24 * 3600
