"""Who is signed in as an organiser, and where they may look: a stop-gap until `shared/auth.py` exists.

Everything in the campaigns service asks `current_organiser(request)` (through `require_organiser`), so moving to
the shared organiser session helper changes this one function. Until then, as in the events service, an organiser
presents a token signed with SECRET_KEY (purpose `organiser-session`, payload `{o, t, s}`) as
`Authorization: Bearer <token>` or in the `gs_organiser` cookie; integrations send one of purpose `osdi-api` in
`OSDI-API-Token`. `python -m services.campaigns organiser-token` prints one.
"""

from __future__ import annotations

from collections.abc import Iterable
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

    @property
    def network(self) -> bool:
        return self.scope_type == "network"

    def covers(self, scope_type: str, scope_id: str | None, region_id: str | None = None,
               ancestors: Iterable[str] = ()) -> bool:
        """Whether something for (scope_type, scope_id), lying in `region_id` under `ancestors`, is theirs."""
        if self.network:
            return True
        if (self.scope_type, self.scope_id) == (scope_type, scope_id):
            return True
        if self.scope_id is None:
            return False
        if self.scope_type == "region" and self.scope_id == region_id:
            return True
        return self.scope_id in set(ancestors)

    def describe(self) -> str:
        return "the whole network" if self.network else f"the {self.scope_type} {self.scope_id}"


def issue(secret_key: str, scope: OrganiserScope, purpose: str = ORGANISER_SESSION) -> str:
    return tokens.sign(secret_key, purpose, {"o": scope.organiser_id, "t": scope.scope_type, "s": scope.scope_id})


def _scope_from(secret_key: str, token: str, purpose: str, max_age_s: int) -> OrganiserScope:
    payload = tokens.verify(secret_key, purpose, token, max_age_s)
    return OrganiserScope(organiser_id=str(payload["o"]), scope_type=str(payload["t"]), scope_id=payload.get("s"))


def current_organiser(request: Request) -> OrganiserScope | None:
    """The signed-in organiser, or None. The one place to swap for the shared organiser session helper."""
    secret_key = request.app.state.runtime.settings.secret_key
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    try:
        return _scope_from(secret_key, token, ORGANISER_SESSION, SESSION_MAX_AGE_S)
    except (tokens.InvalidToken, KeyError, TypeError):
        return None


def require_organiser(request: Request) -> OrganiserScope:
    """FastAPI dependency: the signed-in organiser, or 401 with what to do."""
    organiser = current_organiser(request)
    if organiser is None:
        raise HTTPException(
            401, "Sign in as an organiser to see this (your sign-in may have expired)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return organiser


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
