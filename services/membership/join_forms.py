"""The join form's submission, whichever way it comes (our page, a site embedding it, a site's own script as
JSON): check it, count it against the sender's address, let a bot caught by the honeypot learn nothing, and hand
a valid one to the batch writer.

A person never learns from the outcome whether an address is already a member: a new join, a join again, a join
stopped by the per-email limit and a bot caught by the honeypot are all accepted alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.membership.batching import JoinBatcher
from services.membership.domain import InvalidJoin, JoinApplication, JoinForm, JoinOptions, validate_join
from services.membership.joins import JoinOutcome, Joins

HONEYPOT = "website"  # a field people never see: only a bot fills it in
LIST_FIELDS = ("interests", "groups", "subteams")
TEXT_FIELDS = (
    "name",
    "email",
    "postcode",
    "consent_version",
    "engagement_level",
    "region",
    "skills",
    "time_available",
    "organisation",
    "organisation_name",
    "source",
)


@dataclass(frozen=True)
class JoinFormResult:
    """What became of a submission: `too_many` from this address, `errors` to fix, or accepted (`application`
    is None for a bot caught by the honeypot)."""

    options: JoinOptions
    application: JoinApplication | None = None
    errors: dict[str, str] = field(default_factory=dict)
    too_many: bool = False
    outcome: JoinOutcome | None = None  # what the join made (None: stopped by the per-email limit, or a bot)

    @property
    def accepted(self) -> bool:
        return not self.too_many and not self.errors


class JoinForms:
    def __init__(self, joins: Joins, batcher: JoinBatcher) -> None:
        self.joins = joins
        self.batcher = batcher

    async def submit(self, data: dict[str, Any], ip: str, site: str | None) -> JoinFormResult:
        """Rate limit, honeypot, then the batch writer; `site`: the origin of a site embedding the form."""
        options = await self.joins.options()
        application: JoinApplication | None = None
        errors: dict[str, str] = {}
        if not data.get(HONEYPOT):
            try:
                application = validate_join(form_from(data), options, site=site)
            except InvalidJoin as invalid:
                errors = invalid.errors
        if application is None:
            # Counted against the address like any attempt; a bot caught by the honeypot learns nothing.
            if not (await self.joins.allow_join_from(ip)).allowed:
                return JoinFormResult(options, too_many=True)
            return JoinFormResult(options, errors=errors)
        submission = await self.batcher.submit(application, ip=ip)
        if not submission.address_allowed:
            return JoinFormResult(options, too_many=True)
        return JoinFormResult(options, application, outcome=submission.outcome)


def form_from(data: dict[str, Any]) -> JoinForm:
    """A join form from what was posted (form fields or JSON): anything not a string or a list of them is empty."""

    def text(name: str) -> str:
        value = data.get(name, "")
        return value if isinstance(value, str) else ""

    def items(name: str) -> list[str]:
        value = data.get(name) or []
        if isinstance(value, str):
            value = [value]
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    consent = data.get("email_consent")
    form = JoinForm(
        email_consent=consent is True or (isinstance(consent, str) and consent.lower() in ("yes", "on", "true", "1"))
    )
    for name in TEXT_FIELDS:
        setattr(form, name, text(name))
    for name in LIST_FIELDS:
        setattr(form, name, items(name))
    return form
