"""Acting as an organiser in tests: a signed session token the services verify locally."""

from __future__ import annotations

import uuid

from deploy.local import launcher
from shared.auth import OrganiserScope, issue


def organiser_headers(scope_type: str = "network", scope_id: str | None = None) -> dict[str, str]:
    scope = OrganiserScope(organiser_id=str(uuid.uuid4()), scope_type=scope_type, scope_id=scope_id)
    return {"Authorization": f"Bearer {issue(launcher.secret_key(), scope)}"}
