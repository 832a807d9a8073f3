"""Every service's OpenAPI document is the truth about it (#18): Schemathesis generates requests from each document
(well-formed, and malformed: wrong shapes, types, missing fields) and sends them through the gateway of the running
system, as an anonymous caller, an integration's API key and a signed-in organiser; no answer is a 500, and every
answer's status, media type and body are the ones the document declares. Bounded and derandomized (the same
requests every run), so it is a test, not a search.

The callers are a sub-team's organiser and a key that sub-team's organiser made, so the generated writes land (if
at all) in a part of the network no other test reads; the generated requests come from an address of their own, so
the rate limits they trip bite nobody else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.local import launcher
from deploy.local.services import service_url
from shared.auth import SESSION_COOKIE
from tests.membership.conftest import make_organiser

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 8  # per operation and caller (well-formed and malformed): every operation is tried, none for long
SERVICES = ("membership", "events", "notifications", "campaigns")
# Routes whose generated calls would act outside the fuzzing caller's sandbox (sign one's own session out, set an
# organiser's password from a link): their inputs are covered by their own tests.
SANDBOX = "Fuzzing sandbox (tests)"  # the sub-team of the fuzzing callers
FUZZING_ADDRESS = "198.51.100.77"  # documentation range (RFC 5737): the rate limits count it on its own
SKIPPED = {("POST", "/signin/out"), ("POST", "/organisers/set-password")}


@dataclass
class Caller:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def callers(gateway: Any, membership_db: Any) -> dict[str, Caller]:
    """Anonymous, an API key and an organiser's session, all of one sub-team of their own."""
    subteam = await membership_db.fetchval("SELECT id FROM subteams WHERE name = $1", SANDBOX)
    if subteam is None:
        _, network = await make_organiser(membership_db)
        made = await gateway.post("/admin/units", headers=network, data={"kind": "subteam", "name": SANDBOX})
        assert made.status_code in (200, 303), made.text
        subteam = await membership_db.fetchval("SELECT id FROM subteams WHERE name = $1", SANDBOX)
    _, organiser = await make_organiser(membership_db, "subteam", subteam)
    created = await gateway.post("/organisers/api-keys", headers=organiser,
                                 data={"name": f"fuzz {subteam[:6]}", "scope_type": "subteam", "scope_id": subteam})
    assert created.status_code == 201, created.text
    key = created.text.split('<code id="new-api-key">')[1].split("</code>")[0]
    token = organiser["Authorization"].split(" ", 1)[1]
    return {
        "anonymous": Caller("anonymous"),
        "api_key": Caller("api_key", {"OSDI-API-Token": key}),
        "organiser": Caller("organiser", dict(organiser), {SESSION_COOKIE: token}),
    }


def _operations(service: str, caller: Caller) -> Iterator[Any]:
    """The service's operations a caller's credentials change anything for: every one for an anonymous caller, the
    OSDI API for a key (the pages do not read it), the rest for an organiser (the OSDI API takes keys only)."""
    schema = schemathesis.openapi.from_url(f"{service_url(service)}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        osdi = operation.path.startswith("/api/v2")
        if (operation.method.upper(), operation.path) in SKIPPED or (caller.name, osdi) in (
            ("api_key", False), ("organiser", True)):
            continue
        yield operation


@pytest.mark.parametrize("caller_name", ["anonymous", "api_key", "organiser"])
@pytest.mark.parametrize("service", SERVICES)
async def test_every_answer_is_the_one_the_openapi_document_declares(
    service: str, caller_name: str, callers: dict[str, Caller]
) -> None:
    failures = await asyncio.to_thread(_fuzz, service, callers[caller_name])
    assert not failures, f"{len(failures)} operations of {service} as {caller_name}:\n\n" + "\n\n".join(
        f"{label}: {why}" for label, why in sorted(failures.items()))


def _fuzz(service: str, caller: Caller) -> dict[str, str]:
    """Each operation's generated requests as `caller`; the first failure of each operation, by operation."""
    session = requests.Session()
    session.cookies.update(caller.cookies)
    headers = {**caller.headers, "X-Forwarded-For": FUZZING_ADDRESS}
    failures = {}
    for operation in _operations(service, caller):
        if (failure := _first_failure(operation, session, headers)) is not None:
            failures[f"{operation.method.upper()} {operation.path}"] = failure
    return failures


def _first_failure(operation: Any, session: requests.Session, headers: dict[str, str]) -> str | None:
    found: list[str] = []

    # Requests as the document describes them, and requests that break it (wrong shapes, types, missing fields).
    @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        if found:
            return
        response = case.call(base_url=launcher.GATEWAY_URL, session=session, headers=headers, allow_redirects=False,
                             timeout=30)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as exc:  # a check's failure (or several): kept, reported together
            found.append(str(exc).split("Reproduce with:")[0].strip() + f"\n    {case.as_curl_command(headers)}")

    run()
    return found[0] if found else None
