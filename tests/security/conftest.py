"""Attacks on the running system through the gateway: the callers an attacker could be."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from deploy.local import launcher
from shared.auth import OSDI_API, OrganiserScope, issue
from tests.membership.conftest import make_organiser


@pytest.fixture
async def network_organiser(membership_db: asyncpg.Connection) -> dict[str, str]:
    """The headers of a signed-in network organiser, with an account membership knows."""
    return (await make_organiser(membership_db, "network"))[1]


@pytest.fixture
async def membership_key(gateway: httpx.AsyncClient, network_organiser: dict[str, str]) -> dict[str, str]:
    """A network-wide OSDI key, made in the organiser pages as an organiser would."""
    created = await gateway.post("/organisers/api-keys", headers=network_organiser,
                                 data={"name": f"CRM {uuid.uuid4().hex[:6]}", "scope_type": "network", "scope_id": ""})
    assert created.status_code == 201, created.text
    return {"OSDI-API-Token": created.text.split('<code id="new-api-key">')[1].split("</code>")[0]}


@pytest.fixture
def integration_key() -> dict[str, str]:
    """An OSDI key events and campaigns accept (they verify the signature; membership keeps a record too)."""
    return {"OSDI-API-Token": issue(launcher.secret_key(), OrganiserScope("integration", "network"), OSDI_API)}
