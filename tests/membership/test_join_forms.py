"""A join form's submission (services/membership/join_forms.py), the one sequence behind the HTML and the JSON
join routes: rate limit, honeypot, batch writer. With stand-ins for storage: no Kafka, no database."""

from __future__ import annotations

from typing import Any, cast

from services.membership.batching import JoinBatcher
from services.membership.domain import Choice, JoinApplication, JoinOptions
from services.membership.join_forms import HONEYPOT, JoinForms
from services.membership.joins import Joins, JoinSubmission
from services.membership.ratelimit import Verdict

OPTIONS = JoinOptions(
    interests=(),
    levels=(Choice("informed", "Keep me informed"),),
    regions=(),
    groups=(),
    subteams=(),
    partners=(),
    consent_version="email-2026-11",
    consent_wording="You may email me",
    consent_versions=frozenset({"email-2026-11"}),
)
VALID = {"name": "Olive Morris", "email": "olive@example.org", "postcode": "SW2 1AA", "email_consent": "yes"}


class StandInJoins:
    def __init__(self, ip_allowed: bool = True) -> None:
        self.ip_allowed = ip_allowed
        self.counted: list[str] = []

    async def options(self) -> JoinOptions:
        return OPTIONS

    async def allow_join_from(self, ip: str) -> Verdict:
        self.counted.append(ip)
        return Verdict(self.ip_allowed)


class StandInBatcher:
    def __init__(self, address_allowed: bool = True) -> None:
        self.address_allowed = address_allowed
        self.stored: list[tuple[JoinApplication, str]] = []

    async def submit(self, application: JoinApplication, *, ip: str) -> JoinSubmission:
        self.stored.append((application, ip))
        return JoinSubmission(self.address_allowed)


def forms(joins: StandInJoins, batcher: StandInBatcher) -> JoinForms:
    return JoinForms(cast(Joins, joins), cast(JoinBatcher, batcher))


async def test_a_valid_form_goes_to_the_batch_writer_which_counts_both_limits_itself():
    joins, batcher = StandInJoins(), StandInBatcher()
    result = await forms(joins, batcher).submit(dict(VALID), "192.0.2.1", "https://partner.example")

    assert result.accepted and result.application is not None
    [(application, ip)] = batcher.stored
    assert application.email == "olive@example.org" and application.site == "https://partner.example"
    assert ip == "192.0.2.1" and joins.counted == []


async def test_a_valid_form_from_an_address_over_its_limit_is_too_many():
    result = await forms(StandInJoins(), StandInBatcher(address_allowed=False)).submit(dict(VALID), "192.0.2.2", None)

    assert result.too_many and not result.accepted


async def test_a_form_to_fix_is_counted_against_the_address_and_stores_nothing():
    joins, batcher = StandInJoins(), StandInBatcher()
    result = await forms(joins, batcher).submit({**VALID, "email": "not an address"}, "192.0.2.3", None)

    assert set(result.errors) == {"email"} and not result.accepted
    assert joins.counted == ["192.0.2.3"] and batcher.stored == []


async def test_a_bot_caught_by_the_honeypot_is_counted_and_answered_as_accepted_with_nothing_stored():
    joins, batcher = StandInJoins(), StandInBatcher()
    data: dict[str, Any] = {**VALID, HONEYPOT: "https://spam.example"}
    result = await forms(joins, batcher).submit(data, "192.0.2.4", None)

    assert result.accepted and result.application is None and result.errors == {}
    assert joins.counted == ["192.0.2.4"] and batcher.stored == []


async def test_a_bot_or_a_form_to_fix_from_an_address_over_its_limit_is_too_many():
    joins = StandInJoins(ip_allowed=False)
    for data in ({**VALID, HONEYPOT: "x"}, {**VALID, "name": ""}):
        result = await forms(joins, StandInBatcher()).submit(data, "192.0.2.5", None)
        assert result.too_many and result.errors == {}
