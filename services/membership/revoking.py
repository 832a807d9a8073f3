"""Taking access back: revoking an API key, disabling an organiser, revoking a role, ending a session at sign-out.

Each use case changes membership's own records, writes the revocation into membership's revocation record and
announces it (ApiKeyRevoked, OrganiserDisabled, RoleRevoked, OrganiserSignedOut) in one transaction; every other
service copies the announcement into its own record within seconds (`shared/revocations.py`), so the key or
session stops working everywhere. Who may do what: an organiser acts only within the part of the network they
look after (`OrganiserAccounts.within`), never on themselves.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Table, select, update

from services.membership import db as tables
from services.membership.accounts import OrganiserAccounts, utcnow
from services.membership.roster import Roster
from shared import auth, revocations
from shared.db import Database
from shared.events.catalog import ApiKeyRevoked, OrganiserDisabled, OrganiserSignedOut, RoleRevoked
from shared.events.envelope import EventData
from shared.uow import UnitOfWork, UnitsOfWork


class SessionsOfActiveAccounts(revocations.Revocations):
    """Membership's revocation record, which also refuses a session whose organiser account is missing or no longer
    active: the check every organiser page makes, answered by one statement on one connection (where it was the
    revocation check, then the account's own transaction)."""

    def __init__(self, db: Database, table: Table) -> None:
        super().__init__(db, table)
        self.session_sql = (
            f"SELECT ({self.session_sql}) OR NOT EXISTS (SELECT 1 FROM {tables.organisers.fullname} "
            "WHERE id = $1 AND status = 'active')"
        )


class CannotRevoke(Exception):
    """Not theirs to revoke (or not there): the page answers 404, as if it did not exist."""


class Revoking:
    def __init__(self, uows: UnitsOfWork, accounts: OrganiserAccounts) -> None:
        self.uows = uows
        self.accounts = accounts

    @staticmethod
    async def _announce(uow: UnitOfWork, *events: EventData) -> None:
        """Record each revocation here and announce it, in the use case's transaction."""
        for event in events:
            await revocations.record(uow.session, tables.delivery.revocations, event)
        await uow.emit(*events)

    # API keys --------------------------------------------------------------------------------------
    async def revoke_api_key(self, key_id: str, by: auth.OrganiserScope) -> None:
        k = tables.api_keys
        async with self.uows.begin() as uow:
            session = uow.session
            row = (await session.execute(select(k).where(k.c.id == key_id).with_for_update())).first()
            if row is None or not await self.accounts.within(session, by, row.scope_type, row.scope_id):
                raise CannotRevoke(key_id)
            if row.revoked_at is not None:
                return
            now = utcnow()
            await session.execute(update(k).where(k.c.id == key_id).values(revoked_at=now))
            await Roster.audit(session, f"organiser:{by.organiser_id}", "api_key.revoke", key_id=key_id, name=row.name)
            await self._announce(
                uow, ApiKeyRevoked(key_id=key_id, created_by=row.created_by, revoked_by=by.organiser_id, revoked_at=now)
            )

    # organisers ------------------------------------------------------------------------------------
    async def organiser_to_disable(self, organiser_id: str, by: auth.OrganiserScope) -> Any:
        """The organiser `by` may disable (for the confirmation page), or CannotRevoke."""
        async with self.uows.begin() as uow:
            return await self._disableable(uow, organiser_id, by)

    async def _disableable(
        self, uow: UnitOfWork, organiser_id: str, by: auth.OrganiserScope, lock: bool = False
    ) -> Any:
        o = tables.organisers
        query = select(o).where(o.c.id == organiser_id)
        row = (await uow.session.execute(query.with_for_update() if lock else query)).first()
        if (
            row is None
            or row.id == by.organiser_id
            or row.status == "disabled"
            or not await self.accounts.within(uow.session, by, row.scope_type, row.scope_id)
        ):
            raise CannotRevoke(organiser_id)
        return row

    async def disable_organiser(self, organiser_id: str, by: auth.OrganiserScope) -> None:
        """The account cannot sign in any more; its sessions, its API keys, its digests and its feed end."""
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._disableable(uow, organiser_id, by, lock=True)
            now = utcnow()
            o, k = tables.organisers, tables.api_keys
            await session.execute(update(o).where(o.c.id == row.id).values(status="disabled", set_password_nonce=None))
            await session.execute(
                update(k).where(k.c.created_by == row.id, k.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            await Roster.audit(session, f"organiser:{by.organiser_id}", "organiser.disable", organiser_id=row.id)
            await self._announce(
                uow, OrganiserDisabled(organiser_id=row.id, disabled_by=by.organiser_id, disabled_at=now)
            )

    # roles -----------------------------------------------------------------------------------------
    async def role_to_revoke(self, grant_id: str, by: auth.OrganiserScope) -> Any:
        """The grant `by` may revoke (for the confirmation page), or CannotRevoke."""
        async with self.uows.begin() as uow:
            return await self._revocable(uow, grant_id, by)

    async def _revocable(self, uow: UnitOfWork, grant_id: str, by: auth.OrganiserScope, lock: bool = False) -> Any:
        g = tables.role_grants
        query = select(g).where(g.c.id == grant_id)
        row = (await uow.session.execute(query.with_for_update() if lock else query)).first()
        if (
            row is None
            or row.revoked_at is not None
            or row.organiser_id == by.organiser_id
            or not await self.accounts.within(uow.session, by, row.scope_type, row.scope_id)
        ):
            raise CannotRevoke(grant_id)
        return row

    async def revoke_role(self, grant_id: str, by: auth.OrganiserScope) -> None:
        """The holder's sessions of that scope end; an organiser account's API keys end with its role, and the
        account cannot sign in until it is given a role again. Notifications stops that scope's digest."""
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self._revocable(uow, grant_id, by, lock=True)
            now = utcnow()
            g, k = tables.role_grants, tables.api_keys
            await session.execute(update(g).where(g.c.id == row.id).values(revoked_at=now))
            if row.organiser_id is not None:
                await session.execute(
                    update(k).where(k.c.created_by == row.organiser_id, k.c.revoked_at.is_(None)).values(revoked_at=now)
                )
            holder = row.organiser_id or row.member_id
            await Roster.audit(
                session, f"organiser:{by.organiser_id}", "role.revoke", row.member_id, grant_id=row.id, role=row.role
            )
            await self._announce(
                uow,
                RoleRevoked(
                    grant_id=row.id,
                    organiser_id=holder,
                    member_id=row.member_id,
                    role=row.role,
                    scope_type=row.scope_type,
                    scope_id=row.scope_id,
                    revoked_by=by.organiser_id,
                    revoked_at=now,
                ),
            )

    # sessions --------------------------------------------------------------------------------------
    async def sign_out(self, who: auth.OrganiserScope) -> None:
        """End this session everywhere (kept in the record until it would have expired anyway)."""
        if who.session_id is None:
            return
        now = utcnow()
        signed = who.issued_at or now
        async with self.uows.begin() as uow:
            await self._announce(
                uow,
                OrganiserSignedOut(
                    organiser_id=who.organiser_id,
                    session_id=who.session_id,
                    signed_out_at=now,
                    expires_at=signed + timedelta(seconds=auth.SESSION_MAX_AGE_S),
                ),
            )
