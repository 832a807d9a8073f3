"""Organiser sessions and integration API keys, verified locally by every service with SECRET_KEY.

Membership signs an organiser in (password, then a TOTP code) and issues a session token carrying the
organiser's id and scope: the whole network, a region, a group or a sub-team. Any service checks the
token's signature and age itself, never calling membership. Pages read it from the `gs_organiser`
cookie (HttpOnly, SameSite=Lax), JSON APIs from `Authorization: Bearer <token>`.

Integrations send an API key in the `OSDI-API-Token` header: a signed token carrying the key's id and
the scope it was created for.

A signature alone is not enough: every session has an id, and every service checks each session and key
against its own copy of membership's revocations (`shared/revocations.py`, installed as
`app.state.revocations`): signed out, key revoked, organiser disabled, role revoked. A service that cannot
tell (no record, database down) refuses: revocation fails closed. Membership also installs
`app.state.api_key_revoked` (an async function of the key id), which refuses keys it never issued.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from fastapi import HTTPException, Request

from shared import tokens

ORGANISER_SESSION = "organiser-session"
OSDI_API = "osdi-api"
SESSION_COOKIE = "gs_organiser"
SESSION_MAX_AGE_S = 12 * 3600
API_TOKEN_MAX_AGE_S = 10 * 365 * 24 * 3600
SCOPE_TYPES = ("network", "region", "group", "subteam")

RevocationCheck = Callable[[str], Awaitable[bool]]


class RevocationRecord(Protocol):
    """What a service installs as `app.state.revocations` (`shared.revocations.Revocations`)."""

    async def is_revoked(self, who: OrganiserScope) -> bool: ...


@dataclass(frozen=True)
class OrganiserScope:
    """An organiser (or an integration's API key) and the part of the network they look after."""

    organiser_id: str
    scope_type: str  # network | region | group | subteam
    scope_id: str | None = None
    key_id: str | None = None  # set when the caller is an API key
    session_id: str | None = field(default=None, compare=False)  # set for a session: sign-out ends this one
    issued_at: datetime | None = field(default=None, compare=False)  # when its token was signed
    # Words for pages, carried in the session so every service's organiser layout can greet them without asking
    # membership: their name and their part of the network's name ("West Midlands"). Not part of who they are.
    name: str | None = field(default=None, compare=False)
    scope_name: str | None = field(default=None, compare=False)

    @property
    def is_network(self) -> bool:
        return self.scope_type == "network"

    def covers(
        self, scope_type: str, scope_id: str | None, region_id: str | None = None, *, ancestors: Iterable[str] = ()
    ) -> bool:
        """Whether something scoped to (scope_type, scope_id), in `region_id`, under the units `ancestors`
        (its group, the group's region…), is theirs."""
        if self.is_network:
            return True
        if (self.scope_type, self.scope_id) == (scope_type, scope_id):
            return True
        if self.scope_id is None:
            return False
        if self.scope_type == "region" and self.scope_id == region_id:
            return True
        return self.scope_id in set(ancestors)

    def describe(self) -> str:
        """Their part of the network in words, for messages and pages: `the whole network`, `the region …`."""
        if self.is_network:
            return "the whole network"
        kind = "sub-team" if self.scope_type == "subteam" else self.scope_type
        return f"the {kind} {self.scope_name or self.scope_id}"

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"o": self.organiser_id, "t": self.scope_type, "s": self.scope_id}
        if self.key_id:
            body["k"] = self.key_id
        if self.session_id:
            body["i"] = self.session_id
        if self.name:
            body["n"] = self.name
        if self.scope_name:
            body["sn"] = self.scope_name
        return body


def issue(secret_key: str, scope: OrganiserScope, purpose: str = ORGANISER_SESSION) -> str:
    """A signed token for `scope`: an organiser session (default) or, with purpose OSDI_API, an API key.

    A session gets an id of its own (so it can be ended) and a key one (so it can be revoked) when `scope`
    has none."""
    if purpose == ORGANISER_SESSION and not scope.session_id:
        scope = replace(scope, session_id=uuid.uuid4().hex)
    if purpose == OSDI_API and not scope.key_id:
        scope = replace(scope, key_id=str(uuid.uuid4()))
    return tokens.sign(secret_key, purpose, scope.payload())


def verify(
    secret_key: str, token: str, purpose: str = ORGANISER_SESSION, max_age_s: int | None = None
) -> OrganiserScope:
    """The scope a token carries; `tokens.InvalidToken` when it is forged, altered, expired or malformed, or
    when it cannot be revoked (a session without an id, a key without one). Revocations are checked apart:
    `require_organiser`, `require_api_token`."""
    if max_age_s is None:
        max_age_s = SESSION_MAX_AGE_S if purpose == ORGANISER_SESSION else API_TOKEN_MAX_AGE_S
    payload, signed_at = tokens.verify_with_time(secret_key, purpose, token, max_age_s)
    try:
        scope_type = str(payload["t"])
        if scope_type not in SCOPE_TYPES:
            raise ValueError(scope_type)
        scope_id = payload.get("s")
        session_id = str(payload["i"]) if payload.get("i") else None
        key_id = str(payload["k"]) if payload.get("k") else None
        if (purpose == ORGANISER_SESSION and session_id is None) or (purpose == OSDI_API and key_id is None):
            raise ValueError("a token that could not be revoked")
        return OrganiserScope(
            organiser_id=str(payload["o"]),
            scope_type=scope_type,
            scope_id=str(scope_id) if scope_id is not None else None,
            key_id=key_id,
            session_id=session_id,
            issued_at=signed_at,
            name=str(payload["n"]) if payload.get("n") else None,
            scope_name=str(payload["sn"]) if payload.get("sn") else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise tokens.InvalidToken("This token is not valid") from None


def _secret(request: Request) -> str:
    return str(request.app.state.runtime.settings.secret_key)


def session_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(SESSION_COOKIE, "")


async def revoked(request: Request, who: OrganiserScope) -> bool:
    """Whether this service's record says `who` was revoked; raises when it cannot tell."""
    record: RevocationRecord | None = getattr(request.app.state, "revocations", None)
    if record is None:
        raise LookupError("this service keeps no revocation record")
    return await record.is_revoked(who)


async def optional_organiser(request: Request) -> OrganiserScope | None:
    """The signed-in organiser, or None (no token, one that is not valid or was revoked, or the revocation
    record cannot be read: fails closed)."""
    token = session_token(request)
    if not token:
        return None
    try:
        who = verify(_secret(request), token)
        if await revoked(request, who):
            return None
        request.state.organiser = who  # for the page's layout (shared.web.signed_in_organiser)
        return who
    except tokens.InvalidToken:
        return None
    except Exception:  # the revocation record cannot be read: not signed in
        return None


async def require_organiser(request: Request) -> OrganiserScope:
    """The signed-in organiser, or 401 with a message saying what to do (503 when this service cannot tell
    whether the session was ended)."""
    token = session_token(request)
    if not token:
        raise HTTPException(401, "Sign in as an organiser to do this", headers={"WWW-Authenticate": "Bearer"})
    try:
        who = verify(_secret(request), token)
    except tokens.InvalidToken:
        raise HTTPException(
            401,
            "Your organiser sign-in is not valid or has expired: sign in again",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    await _refuse_revoked(request, who, "Your organiser sign-in has ended: sign in again")
    request.state.organiser = who  # for the page's layout (shared.web.signed_in_organiser)
    return who


async def _refuse_revoked(request: Request, who: OrganiserScope, message: str) -> None:
    try:
        is_revoked = await revoked(request, who)
    except Exception:
        raise HTTPException(
            503, "Sign-ins cannot be checked just now: try again in a minute", headers={"Retry-After": "30"}
        ) from None
    if is_revoked:
        raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


async def require_api_token(request: Request) -> OrganiserScope:
    """The integration calling an OSDI API, from its `OSDI-API-Token` header, or 401 (503 when this service
    cannot tell whether the key was revoked)."""
    token = request.headers.get("osdi-api-token", "")
    if not token:
        raise HTTPException(401, "Send your API key in the OSDI-API-Token header")
    try:
        caller = verify(_secret(request), token, OSDI_API)
    except tokens.InvalidToken:
        raise HTTPException(401, "The API key in OSDI-API-Token is not valid") from None
    await _refuse_revoked(request, caller, "This API key has been revoked")
    check: RevocationCheck | None = getattr(request.app.state, "api_key_revoked", None)
    if check is not None and caller.key_id and await check(caller.key_id):
        raise HTTPException(401, "This API key has been revoked")
    return caller
