"""Saved audiences ("saved lists"): an audience an organiser built for a mailing, kept under a name in their scope
to choose again for a later mailing. Who may see one is who may see a mailing written there (Mailings.covers):
organisers of that scope and of the scopes above it; nobody else learns it exists.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.domain import MailingAudience
from services.notifications.mailings import Mailings
from shared.auth import OrganiserScope
from shared.uow import UnitOfWork


class SavedAudiences:
    """The use cases of saved audiences, beside the mailings whose scope rules they share."""

    def __init__(self, mailings: Mailings) -> None:
        self.mailings = mailings
        self.uows = mailings.uows

    async def list_for(self, session: AsyncSession, who: OrganiserScope) -> list[Any]:
        """The audiences `who` may use, by name."""
        a = tables.saved_audiences
        stmt = select(a).order_by(func.lower(a.c.name), a.c.id).limit(500)
        scopes = await self.mailings.scopes_under(session, who)
        if scopes is not None:
            stmt = stmt.where(a.c.scope_id.in_(scopes))
        return list((await session.execute(stmt)).all())

    async def get(self, session: AsyncSession, who: OrganiserScope, audience_id: str) -> Any:
        """The saved audience if `who` may see it, else None."""
        a = tables.saved_audiences
        row = (await session.execute(select(a).where(a.c.id == audience_id))).first()
        if row is None or not await self.mailings.covers(session, who, row.scope_type, row.scope_id):
            return None
        return row

    async def name_taken(
        self, session: AsyncSession, who: OrganiserScope, name: str, except_id: str | None = None
    ) -> bool:
        """Whether an audience of `who`'s own scope already has this name (any case)."""
        a = tables.saved_audiences
        stmt = select(a.c.id).where(
            a.c.scope_type == who.scope_type,
            a.c.scope_id.is_(None) if who.scope_id is None else a.c.scope_id == who.scope_id,
            func.lower(a.c.name) == name.strip().lower(),
        )
        if except_id is not None:
            stmt = stmt.where(a.c.id != except_id)
        return (await session.execute(stmt.limit(1))).first() is not None

    async def create(self, uow: UnitOfWork, who: OrganiserScope, name: str, audience: MailingAudience) -> str:
        audience_id = str(uuid.uuid4())
        await uow.session.execute(
            tables.saved_audiences.insert().values(
                id=audience_id,
                name=name.strip(),
                organiser_id=who.organiser_id,
                scope_type=who.scope_type,
                scope_id=who.scope_id,
                audience=audience.as_json(),
            )
        )
        return audience_id

    async def change(self, uow: UnitOfWork, audience_id: str, name: str, audience: MailingAudience) -> None:
        a = tables.saved_audiences
        await uow.session.execute(
            update(a)
            .where(a.c.id == audience_id)
            .values(name=name.strip(), audience=audience.as_json(), updated_at=datetime.now(UTC))
        )

    async def delete(self, uow: UnitOfWork, audience_id: str) -> None:
        """Forget the saved audience; mailings that used it keep their own copy of it."""
        a = tables.saved_audiences
        await uow.session.execute(delete(a).where(a.c.id == audience_id))
