"""The suppression list: addresses that must not be emailed, kept as keyed hashes (not the address itself).

Reasons and what they stop:
- `left`, `erased`, `hard_bounces`: every email; but `left` lets through the confirmation of a join for the
  address (`join_change`): it is the only way someone who left comes back, and nothing changes unless they
  confirm it; and the links of their rights, which outlive their membership (`confirm_download`,
  `confirm_erase`, `data_download`): each asked for just now from their own link.
- `unsubscribed` (ConsentChanged granted=false): every email that is not strictly transactional; the
  transactional ones a person asks for themselves (an RSVP confirmation, a reminder of a meeting they
  RSVPed to, a change or cancellation of it) still go, as UK PECR and GDPR allow.
An erased member's address survives only as this hash, so they are never emailed again without the
network keeping their address.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from sqlalchemy import String, any_, bindparam, delete, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables

# Kinds that are not strictly transactional: they carry List-Unsubscribe and stop on unsubscribe.
MARKETING_KINDS = frozenset({"announcement", "follow_up", "mailing"})
STOPS_EVERYTHING = frozenset({"left", "erased", "hard_bounces"})
REACHES_LEAVERS = frozenset({"join_change", "confirm_download", "confirm_erase", "data_download"})
# Sent after what people are waiting for (see deliveries.priority).
BULK_KINDS = MARKETING_KINDS | {"digest"}


class Suppressions:
    def __init__(self, secret_key: str) -> None:
        self.secret = secret_key.encode()
        self._keyed = hmac.new(self.secret, digestmod=hashlib.sha256)  # keyed once: a mailing hashes every address

    def address_key(self, email: str) -> str:
        mac = self._keyed.copy()
        mac.update(email.strip().lower().encode())
        return mac.hexdigest()

    async def suppress(self, session: AsyncSession, email: str | None, reason: str) -> None:
        if not email:
            return
        s = tables.suppressions
        await session.execute(
            pg_insert(s)
            .values(email=self.address_key(email), reason=reason)
            .on_conflict_do_update(index_elements=[s.c.email], set_={"reason": reason})
        )

    async def lift(self, session: AsyncSession, email: str | None, *reasons: str) -> None:
        """Undo a suppression of these reasons (consent given again lifts `unsubscribed`, nothing else)."""
        if email:
            await self.lift_many(session, [self.address_key(email)], *reasons)

    async def lift_many(self, session: AsyncSession, address_keys: list[str], *reasons: str) -> None:
        """`lift` for several addresses, given by their keyed hashes (`address_key`)."""
        if not address_keys or not reasons:
            return
        s = tables.suppressions
        await session.execute(
            delete(s).where(s.c.email == any_(bindparam("keys", type_=ARRAY(String))), s.c.reason.in_(reasons)),
            {"keys": address_keys},
        )

    async def reason(self, session: AsyncSession, email: str | None) -> str | None:
        if not email:
            return None
        s = tables.suppressions
        return (await session.execute(select(s.c.reason).where(s.c.email == self.address_key(email)))).scalar()

    async def count_hard_failure(self, session: AsyncSession, email: str, suppress_after: int) -> None:
        """One more permanent refusal or hard bounce of the address; suppressed once it has had `suppress_after`
        (BOUNCE_SUPPRESS_AFTER): a relay's reputation depends on it."""
        health = tables.address_health
        failures = (
            await session.execute(
                pg_insert(health)
                .values(email=self.address_key(email), hard_failures=1, last_failure_at=datetime.now(UTC))
                .on_conflict_do_update(
                    index_elements=[health.c.email],
                    set_={"hard_failures": health.c.hard_failures + 1, "last_failure_at": datetime.now(UTC)},
                )
                .returning(health.c.hard_failures)
            )
        ).scalar_one()
        if failures >= suppress_after:
            await self.suppress(session, email, "hard_bounces")

    async def blocks(self, session: AsyncSession, email: str | None, kind: str) -> bool:
        return blocks(await self.reason(session, email), kind)


def blocks(reason: str | None, kind: str) -> bool:
    """Whether a suppression for `reason` (None: none) stops an email of `kind`."""
    if reason is None or (reason == "left" and kind in REACHES_LEAVERS):
        return False
    return reason in STOPS_EVERYTHING or kind in MARKETING_KINDS
