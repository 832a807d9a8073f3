"""Sites that may embed the join form and be redirected back to after it: organisers allow them by origin."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.membership import db as tables
from services.membership.accounts import AccountProblem
from services.membership.domain import origin_of
from shared.contact import collapse_spaces
from shared.uow import UnitsOfWork


class AllowedOrigins:
    def __init__(self, uows: UnitsOfWork) -> None:
        self.uows = uows

    async def is_allowed(self, origin: str | None) -> bool:
        if not origin:
            return False
        async with self.uows.begin() as uow:
            found = await uow.session.execute(
                select(tables.allowed_origins.c.origin).where(tables.allowed_origins.c.origin == origin)
            )
            return found.first() is not None

    async def all(self) -> list[Any]:
        a = tables.allowed_origins
        async with self.uows.begin() as uow:
            return list((await uow.session.execute(select(a).order_by(a.c.origin))).all())

    async def add(self, url: str, note: str, *, actor: str) -> str:
        """Let a site embed the join form (and be redirected back to): its origin, from any of its addresses."""
        origin = origin_of(url)
        if origin is None or len(origin) > 200 or len(note) > 200:
            raise AccountProblem({"origin": "Enter the site's address, like https://www.example.org"})
        async with self.uows.begin() as uow:
            await uow.session.execute(
                pg_insert(tables.allowed_origins)
                .values(origin=origin, note=collapse_spaces(note))
                .on_conflict_do_update(index_elements=["origin"], set_={"note": collapse_spaces(note)})
            )
            await uow.session.execute(
                insert(tables.audit_log).values(actor=actor, action="origin.allowed", detail={"origin": origin})
            )
        return origin

    async def remove(self, origin: str, *, actor: str) -> None:
        a = tables.allowed_origins
        async with self.uows.begin() as uow:
            await uow.session.execute(delete(a).where(a.c.origin == origin))
            await uow.session.execute(
                insert(tables.audit_log).values(actor=actor, action="origin.removed", detail={"origin": origin})
            )
