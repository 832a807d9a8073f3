"""Per-subject encryption of personal fields in events (crypto-shredding).

The owning service keeps one AES-256 key per subject in its `subject_keys` table and publishes it on a
compacted, access-restricted key topic; services that need the plaintext (notifications, to email a
member) keep a copy in their own `subject_keys` table. Erasing a subject deletes its key everywhere and
writes a tombstone on the key topic, so every copy of the subject's sealed fields in Kafka's logs
becomes unreadable.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events.envelope import Sealed
from shared.outbox import Outbox


class KeyDestroyed(LookupError):
    """The subject's key is gone (erased) or was never known here."""


def subject_keys_table(metadata: MetaData, name: str = "subject_keys") -> Table:
    """A table of subject keys; `name` sets another apart (a service's copies of membership's member keys, kept
    away from the keys it owns and shreds itself)."""
    return Table(
        name,
        metadata,
        Column("key_id", String(64), primary_key=True),
        Column("key", LargeBinary, nullable=True),  # NULL once destroyed: the row remembers the erasure
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("destroyed_at", DateTime(timezone=True), nullable=True),
    )


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal(value: str, key: bytes, *, key_id: str, owner: str) -> Sealed:
    nonce = os.urandom(12)
    # The key id is bound as associated data: a value cannot be moved to another subject.
    ciphertext = AESGCM(key).encrypt(nonce, value.encode(), key_id.encode())
    return Sealed(
        key_owner=owner,
        key_id=key_id,
        nonce=base64.b64encode(nonce).decode(),
        ciphertext=base64.b64encode(ciphertext).decode(),
    )


def _open(aead: AESGCM, sealed: Sealed) -> str:
    return aead.decrypt(base64.b64decode(sealed.nonce), base64.b64decode(sealed.ciphertext),
                        sealed.key_id.encode()).decode()


def unseal(sealed: Sealed, key: bytes) -> str:
    return _open(AESGCM(key), sealed)


def unseal_stored(key: bytes, *stored: dict[str, str] | None) -> list[str]:
    """Several values sealed with one key, as stored (a member's name and address, each a `Sealed` as JSON; None
    is empty), with the key set up once: a page opens hundreds of members' names and addresses."""
    aead = AESGCM(key)
    opened = []
    for value in stored:
        if value is None:
            opened.append("")
            continue
        opened.append(_open(aead, Sealed.model_validate(value)))
    return opened


class KeyStore:
    """A service's table of subject keys: the owner's originals or a consumer's copies."""

    def __init__(self, table: Table, owner: str) -> None:
        self.table = table
        self.owner = owner

    async def get(self, session: AsyncSession, key_id: str) -> bytes | None:
        return (await session.execute(select(self.table.c.key).where(self.table.c.key_id == key_id))).scalar()

    async def get_or_create(self, session: AsyncSession, key_id: str) -> tuple[bytes, bool]:
        """The subject's key, creating it if needed; the flag tells whether it is new."""
        candidate = new_key()
        inserted = await session.execute(
            pg_insert(self.table)
            .values(key_id=key_id, key=candidate)
            .on_conflict_do_nothing()
            .returning(self.table.c.key)
        )
        row = inserted.first()
        if row is not None:
            return row[0], True
        key = await self.get(session, key_id)
        assert key is not None
        return key, False

    async def put(self, session: AsyncSession, key_id: str, key: bytes) -> None:
        """Keep a copy of a key; a key destroyed here is never brought back (a replayed topic cannot undo erasure)."""
        await self.put_many(session, {key_id: key})

    async def put_many(self, session: AsyncSession, keys: dict[str, bytes]) -> None:
        """`put` for several keys with one statement."""
        if not keys:
            return
        stmt = pg_insert(self.table).values([{"key_id": k, "key": v} for k, v in keys.items()])
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[self.table.c.key_id],
                set_={"key": stmt.excluded.key},
                where=self.table.c.destroyed_at.is_(None),
            )
        )

    async def destroy(self, session: AsyncSession, key_id: str) -> None:
        """Destroy the key material and leave a marker, so 'erased' and 'not arrived yet' stay distinguishable."""
        await session.execute(
            pg_insert(self.table)
            .values(key_id=key_id, key=None, destroyed_at=func.now())
            .on_conflict_do_update(
                index_elements=[self.table.c.key_id], set_={"key": None, "destroyed_at": func.now()}
            )
        )

    async def shred(self, session: AsyncSession, key_ids: Iterable[str], outbox: Outbox, topic: str) -> list[str]:
        """Erase subjects: destroy the keys held here (leaving the marker) and put a tombstone for each on the
        key `topic`, so every copy of their sealed fields becomes unreadable. Ids with no key are left alone."""
        ids = list(key_ids)
        if not ids:
            return []
        t = self.table
        shredded = (
            await session.execute(
                update(t)
                .where(t.c.key_id.in_(ids), t.c.key.is_not(None))
                .values(key=None, destroyed_at=func.now())
                .returning(t.c.key_id)
            )
        ).scalars().all()
        for key_id in shredded:
            await outbox.add_tombstone(session, topic, key_id)
        return list(shredded)

    async def is_destroyed(self, session: AsyncSession, key_id: str) -> bool:
        row = (
            await session.execute(select(self.table.c.destroyed_at).where(self.table.c.key_id == key_id))
        ).first()
        return row is not None and row[0] is not None

    async def seal(self, session: AsyncSession, key_id: str, value: str) -> Sealed:
        key, _ = await self.get_or_create(session, key_id)
        return seal(value, key, key_id=key_id, owner=self.owner)

    async def unseal(self, session: AsyncSession, sealed: Sealed | None) -> str | None:
        if sealed is None:
            return None
        key = await self.get(session, sealed.key_id)
        if key is None:
            raise KeyDestroyed(f"no key for subject {sealed.key_id}")
        return unseal(sealed, key)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    return base64.b64decode(text)
