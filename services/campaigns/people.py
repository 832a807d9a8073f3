"""Who a member is, for the lists organisers read (the long tail): their name and address, kept in the members
mirror only sealed with the member's key and opened with campaigns' copy of that key (membership.subject-keys).

A tombstone on the key topic or MemberErased destroys the copy, so nothing here can be read again; the ids and
counts stay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns import queries
from shared.crypto import KeyStore, decode_key, unseal_stored
from shared.events import catalog as ev
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class MemberContact:
    name: str
    email: str


class People:
    def __init__(self) -> None:
        self.keys = KeyStore(tables.member_keys, "membership")

    async def keys_issued(self, uow: UnitOfWork, keys: Iterable[ev.SubjectKeyIssued]) -> None:
        """Copy members' keys (a key destroyed here is never brought back)."""
        await self.keys.put_many(uow.session, {k.key_id: decode_key(k.key) for k in keys})

    async def key_destroyed(self, uow: UnitOfWork, member_id: str) -> None:
        await self.keys.destroy(uow.session, member_id)

    async def contacts(self, session: AsyncSession, member_ids: Iterable[str]) -> dict[str, MemberContact]:
        """The names and addresses of these members that can be read here (known, key not destroyed)."""
        found: dict[str, MemberContact] = {}
        for r in await queries.sealed_members(session, list(member_ids)):
            if r.name is None:
                continue
            found[r.member_id] = MemberContact(*unseal_stored(r.key, r.name, r.email or None))
        return found
