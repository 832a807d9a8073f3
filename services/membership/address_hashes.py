"""Publishing the keyed hash of the address of members who joined before MemberJoined carried it (decision 0008):
without it, events and campaigns cannot link what those members did with their address, before or after.

Migration 0016 marks every member not erased `address_hash_due`; new members' MemberJoined carries the hash, so
they are never marked. Each batch takes some marked members (locked, skipping those another instance holds),
announces each one's hash as a MemberProfileUpdated through the outbox and clears the mark, in one transaction:
run again (the command, or another instance starting) it publishes nobody twice. `mark_everyone` marks them all
again, for after SECRET_KEY was changed (the hashes published before no longer match)."""

from __future__ import annotations

from sqlalchemy import select, update

from services.membership import db as tables
from shared.contact import address_hash
from shared.events.catalog import MemberProfileUpdated
from shared.logging import get_logger
from shared.uow import UnitsOfWork

log = get_logger(__name__)
BATCH = 500


class AddressHashes:
    """Use cases of republishing members' address hashes."""

    def __init__(self, uows: UnitsOfWork, secret_key: str) -> None:
        self.uows = uows
        self.secret_key = secret_key

    async def publish_batch(self, limit: int = BATCH) -> int:
        """Announce the address hash of up to `limit` marked members; how many were announced."""
        m = tables.members
        async with self.uows.begin() as uow:
            session = uow.session
            rows = (
                await session.execute(
                    select(m.c.id, m.c.email_normalised, m.c.status)
                    .where(m.c.address_hash_due)
                    .order_by(m.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            await uow.emit(
                *(
                    MemberProfileUpdated(
                        member_id=r.id,
                        changed=["email_hash"],
                        email_hash=address_hash(self.secret_key, r.email_normalised),
                    )
                    for r in rows
                    if r.status != "erased" and r.email_normalised
                )
            )
            await session.execute(update(m).where(m.c.id.in_([r.id for r in rows])).values(address_hash_due=False))
            return len(rows)

    async def publish_all(self) -> int:
        """Every marked member's hash, batch after batch; how many were announced."""
        total = 0
        while published := await self.publish_batch():
            total += published
        if total:
            log.info("address hashes published", members=total)
        return total

    async def mark_everyone(self) -> int:
        """Mark every member not erased, so their hash is published again; how many."""
        m = tables.members
        async with self.uows.begin() as uow:
            marked = await uow.session.execute(
                update(m).where(m.c.status != "erased", ~m.c.address_hash_due).values(address_hash_due=True)
            )
            return int(marked.rowcount or 0)  # type: ignore[attr-defined]
