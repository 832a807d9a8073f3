"""Who may organise meetings where: a stop-gap until the shared organiser session helper exists.

An organiser presents a token signed with SECRET_KEY (purpose `organiser-session`) either as
`Authorization: Bearer <token>` or in the `gs_organiser` cookie. Integrations present one signed for
purpose `osdi-api` in the `OSDI-API-Token` header. `python -m services.events organiser-token` prints one.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from shared import tokens

ORGANISER_SESSION = "organiser-session"
OSDI_API = "osdi-api"
SESSION_COOKIE = "gs_organiser"
SESSION_MAX_AGE_S = 12 * 3600
API_TOKEN_MAX_AGE_S = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class OrganiserScope:
    """An organiser and the part of the network they look after."""

    organiser_id: str
    scope_type: str  # network | region | group | subteam
    scope_id: str | None = None

    def covers(self, scope_type: str, scope_id: str | None, region_id: str | None = None,
               parent_id: str | None = None) -> bool:
        """Whether a meeting for (scope_type, scope_id), in `region_id` (under `parent_id`), is theirs."""
        if self.scope_type == "network":
            return True
        if (self.scope_type, self.scope_id) == (scope_type, scope_id):
            return True
        if self.scope_type == "region" and self.scope_id is not None and self.scope_id == region_id:
            return True
        return self.scope_type == "group" and self.scope_id is not None and self.scope_id == parent_id


def issue(secret_key: str, scope: OrganiserScope, purpose: str = ORGANISER_SESSION) -> str:
    return tokens.sign(secret_key, purpose, {"o": scope.organiser_id, "t": scope.scope_type, "s": scope.scope_id})


def _scope_from(secret_key: str, token: str, purpose: str, max_age_s: int) -> OrganiserScope:
    payload = tokens.verify(secret_key, purpose, token, max_age_s)
    return OrganiserScope(organiser_id=str(payload["o"]), scope_type=str(payload["t"]), scope_id=payload.get("s"))


def require_organiser(request: Request) -> OrganiserScope:
    """The signed-in organiser, or 401 (JSON API) / a pointer to sign in (pages)."""
    secret_key = request.app.state.runtime.settings.secret_key
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(SESSION_COOKIE, "")
    if not token:
        raise HTTPException(401, "Sign in as an organiser to do this", headers={"WWW-Authenticate": "Bearer"})
    try:
        return _scope_from(secret_key, token, ORGANISER_SESSION, SESSION_MAX_AGE_S)
    except (tokens.InvalidToken, KeyError, TypeError):
        raise HTTPException(
            401, "Your organiser sign-in is not valid or has expired: sign in again",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None


def require_api_token(request: Request) -> OrganiserScope:
    """The integration calling the OSDI API, from its `OSDI-API-Token` header, or 401."""
    secret_key = request.app.state.runtime.settings.secret_key
    token = request.headers.get("osdi-api-token", "")
    if not token:
        raise HTTPException(401, "Send your API key in the OSDI-API-Token header")
    try:
        return _scope_from(secret_key, token, OSDI_API, API_TOKEN_MAX_AGE_S)
    except (tokens.InvalidToken, KeyError, TypeError):
        raise HTTPException(401, "The API key in OSDI-API-Token is not valid") from None
