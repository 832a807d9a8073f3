"""Who is signed in as an organiser, and where they may look, for the campaigns service.

Tokens are `shared/auth.py`'s: membership signs organisers in and issues the session token (the `gs_organiser`
cookie or `Authorization: Bearer`); integrations send an API key in `OSDI-API-Token`. This module adds what
campaigns needs on top: whether a scope covers a unit anywhere under it (groups of a region, sub-teams of a
group). `python -m services.campaigns organiser-token` prints a session token for tests and first runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Request

from shared import auth as shared_auth

ORGANISER_SESSION = shared_auth.ORGANISER_SESSION
OSDI_API = shared_auth.OSDI_API
SESSION_COOKIE = shared_auth.SESSION_COOKIE
SESSION_MAX_AGE_S = shared_auth.SESSION_MAX_AGE_S


@dataclass(frozen=True)
class OrganiserScope:
    """An organiser (or an integration's API key) and the part of the network they look after."""

    organiser_id: str
    scope_type: str  # network | region | group | subteam
    scope_id: str | None = None
    key_id: str | None = None

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


def _of(scope: shared_auth.OrganiserScope) -> OrganiserScope:
    return OrganiserScope(scope.organiser_id, scope.scope_type, scope.scope_id, scope.key_id)


def issue(secret_key: str, scope: OrganiserScope, purpose: str = ORGANISER_SESSION) -> str:
    return shared_auth.issue(
        secret_key, shared_auth.OrganiserScope(scope.organiser_id, scope.scope_type, scope.scope_id, scope.key_id),
        purpose)


def current_organiser(request: Request) -> OrganiserScope | None:
    """The signed-in organiser, or None."""
    scope = shared_auth.optional_organiser(request)
    return _of(scope) if scope is not None else None


def require_organiser(request: Request) -> OrganiserScope:
    """FastAPI dependency: the signed-in organiser, or 401 with what to do."""
    return _of(shared_auth.require_organiser(request))


async def require_api_token(request: Request) -> OrganiserScope:
    """The integration calling the OSDI API, from its `OSDI-API-Token` header, or 401 (also when revoked)."""
    return _of(await shared_auth.require_api_token(request))
