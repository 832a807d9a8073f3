"""Who may organise meetings where: the shared organiser session and API key helpers (`shared/auth.py`).

An organiser presents the session token membership issued at sign-in, either as `Authorization: Bearer
<token>` or in the `gs_organiser` cookie. Integrations present an API key in the `OSDI-API-Token`
header. `python -m services.events organiser-token` still prints a token for local experiments.
"""

from __future__ import annotations

from shared.auth import (
    API_TOKEN_MAX_AGE_S,
    ORGANISER_SESSION,
    OSDI_API,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    OrganiserScope,
    issue,
    require_api_token,
    require_organiser,
)

__all__ = [
    "API_TOKEN_MAX_AGE_S",
    "ORGANISER_SESSION",
    "OSDI_API",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_S",
    "OrganiserScope",
    "issue",
    "require_api_token",
    "require_organiser",
]
