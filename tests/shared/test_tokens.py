"""Signed links: the signer writes itsdangerous's tokens (so every service verifies them as before), faster."""

from __future__ import annotations

import uuid

import pytest
from itsdangerous import URLSafeTimedSerializer

from shared import tokens

SECRET = "a-secret-key-of-the-network-long-enough-for-tests"


def test_a_members_link_token_is_itsdangerous_token_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time", lambda: 1_765_000_000.5)
    for _ in range(200):
        payload = {"m": str(uuid.uuid4())}
        expected = URLSafeTimedSerializer(SECRET, salt=f"groundswell:{tokens.UNSUBSCRIBE}").dumps(payload)
        assert tokens.sign(SECRET, tokens.UNSUBSCRIBE, payload) == expected


@pytest.mark.parametrize("payload", [{"m": "a" * 30}, {"m": "é" * 10}, {"l": "x" * 200}, {"m": "preview"}])
def test_any_payload_verifies_for_its_purpose_only(payload: dict[str, str]) -> None:
    token = tokens.sign(SECRET, tokens.PREFERENCES, payload)
    assert tokens.verify(SECRET, tokens.PREFERENCES, token, 60) == payload
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, tokens.UNSUBSCRIBE, token, 60)
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET + "x", tokens.PREFERENCES, token, 60)
