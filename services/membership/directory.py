"""The network's shape, managed by organisers: regions, local groups, sub-teams, partner organisations and roles.

Each change is announced (OrganisationUnitDefined, RoleGranted) in the same transaction, so the other
services' read models of the network follow.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, literal, null, select, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership.accounts import AccountProblem, OrganiserAccounts, utcnow
from shared import auth
from shared.contact import collapse_spaces
from shared.db import any_of
from shared.events.catalog import OrganisationUnitDefined, RoleGranted
from shared.uow import UnitsOfWork

KINDS: dict[str, Table] = {
    "region": tables.regions,
    "group": tables.local_groups,
    "subteam": tables.subteams,
    "partner": tables.partner_organisations,
}
KIND_NAMES = {"region": "Regions", "group": "Local groups", "subteam": "Sub-teams", "partner": "Partner organisations"}
ROLES = {"organiser": "Organiser", "subteam_lead": "Sub-team lead", "constituency_rep": "Constituency rep"}
MAX_UNIT_NAME = 120


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80] or "unit"


@dataclass(frozen=True)
class UnitRow:
    kind: str
    id: str
    slug: str
    name: str
    parent_id: str | None


async def read_units(session: AsyncSession) -> dict[str, list[UnitRow]]:
    """Every unit by kind, each kind by name, in one statement (pages read the four tables once, not each)."""
    parts = [
        select(literal(kind).label("kind"), table.c.id, table.c.slug, table.c.name,
               (table.c.region_id if kind == "group" else null()).label("parent_id"))
        for kind, table in KINDS.items()
    ]
    rows = (await session.execute(union_all(*parts).order_by("kind", "name"))).all()
    out: dict[str, list[UnitRow]] = {kind: [] for kind in KINDS}
    for r in rows:
        out[r.kind].append(UnitRow(r.kind, r.id, r.slug, r.name, r.parent_id))
    return out


async def read_units_of(session: AsyncSession, unit_ids: Iterable[str]) -> dict[str, list[UnitRow]]:
    """These units (whatever their kind) as `read_units` gives them, in one statement: a page that names a
    member's few units does not read the network's hundreds."""
    wanted = sorted({i for i in unit_ids if i})
    out: dict[str, list[UnitRow]] = {kind: [] for kind in KINDS}
    if not wanted:
        return out
    parts = [
        select(literal(kind).label("kind"), table.c.id, table.c.slug, table.c.name,
               (table.c.region_id if kind == "group" else null()).label("parent_id")).where(any_of(table.c.id, wanted))
        for kind, table in KINDS.items()
    ]
    for r in (await session.execute(union_all(*parts).order_by("kind", "name"))).all():
        out[r.kind].append(UnitRow(r.kind, r.id, r.slug, r.name, r.parent_id))
    return out


def names_of_units(units: dict[str, list[UnitRow]]) -> dict[str, str]:
    """Each unit's name by its id."""
    return {u.id: u.name for kind in units.values() for u in kind}


class Directory:
    def __init__(
        self,
        uows: UnitsOfWork,
        accounts: OrganiserAccounts,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.uows = uows
        self.accounts = accounts
        self.on_change = on_change  # told after a unit is created or renamed (the join form's cached choices)

    async def units(self) -> dict[str, list[UnitRow]]:
        async with self.uows.begin() as uow:
            return await read_units(uow.session)

    def may_define(self, by: auth.OrganiserScope, kind: str, parent_id: str | None, unit_id: str | None) -> bool:
        """Network organisers shape everything; a region's organisers create and rename its groups."""
        if by.is_network:
            return True
        if kind == "group" and by.scope_type == "region":
            return parent_id == by.scope_id
        return kind == by.scope_type and unit_id is not None and unit_id == by.scope_id

    async def define_unit(
        self, kind: str, name: str, *, by: auth.OrganiserScope, unit_id: str | None = None, parent_id: str | None = None
    ) -> str:
        """Create a unit (no `unit_id`) or rename one; announce it. Returns its id."""
        table = KINDS.get(kind)
        name = collapse_spaces(name)
        errors: dict[str, str] = {}
        if table is None:
            raise AccountProblem({"kind": "Choose a region, group, sub-team or partner organisation"})
        if not name:
            errors["name"] = "Enter a name"
        elif len(name) > MAX_UNIT_NAME:
            errors["name"] = f"The name must be {MAX_UNIT_NAME} characters or fewer"
        async with self.uows.begin() as uow:
            session = uow.session
            existing = None
            if unit_id:
                existing = (await session.execute(select(table).where(table.c.id == unit_id).with_for_update())).first()
                if existing is None:
                    raise LookupError(unit_id)
                if kind == "group":
                    parent_id = existing.region_id
            if kind == "group":
                known = (
                    parent_id
                    and (
                        await session.execute(select(tables.regions.c.id).where(tables.regions.c.id == parent_id))
                    ).first()
                )
                if not known:
                    errors["parent_id"] = "Choose the region this group is in"
            if not errors and not self.may_define(by, kind, parent_id, unit_id):
                if existing is not None:
                    raise LookupError(unit_id)  # not theirs: as if it did not exist
                errors["kind"] = "You can only shape the part of the network you look after"
            if errors:
                raise AccountProblem(errors)
            now = utcnow()
            if existing is None:
                unit_id = str(uuid.uuid4())
                slug = await self._free_slug(session, table, slugify(name))
                values: dict[str, Any] = {"id": unit_id, "slug": slug, "name": name}
                if kind == "group":
                    values["region_id"] = parent_id
                await session.execute(pg_insert(table).values(**values))
            else:
                slug = existing.slug
                await session.execute(update(table).where(table.c.id == unit_id).values(name=name, updated_at=now))
            assert unit_id is not None
            await uow.emit(
                OrganisationUnitDefined(
                    unit_id=unit_id,
                    kind=kind,  # type: ignore[arg-type]
                    name=name,
                    parent_id=parent_id if kind == "group" else None,
                    slug=slug,
                )
            )
            uow.on_commit(self.on_change)  # the join form offers the new or renamed unit at once
        return unit_id

    @staticmethod
    async def _free_slug(session: AsyncSession, table: Table, base: str) -> str:
        slug, n = base, 1
        while (await session.execute(select(table.c.id).where(table.c.slug == slug))).first() is not None:
            n += 1
            slug = f"{base}-{n}"
        return slug

    # roles ---------------------------------------------------------------------------------------
    async def grant_role(
        self, member_id: str, role: str, scope_type: str, scope_id: str | None, *, by: auth.OrganiserScope
    ) -> str:
        """Give a member a role (sub-team lead, constituency rep, organiser) in a scope within the granter's."""
        errors: dict[str, str] = {}
        if role not in ROLES:
            errors["role"] = "Choose organiser, sub-team lead or constituency rep"
        async with self.uows.begin() as uow:
            session = uow.session
            m = tables.members
            member = (
                await session.execute(
                    select(m.c.id, m.c.email_normalised, m.c.name).where(m.c.id == member_id, m.c.status != "erased")
                )
            ).first()
            if member is None:
                errors["member_id"] = "Choose a member of the network"
            if scope_type not in auth.SCOPE_TYPES or not await self.accounts.scope_exists(
                session, scope_type, scope_id or None
            ):
                errors["scope_id"] = "Choose a region, group or sub-team that exists"
            elif not await self.accounts.within(session, by, scope_type, scope_id or None):
                errors["scope_id"] = "You can only give roles in the part of the network you look after"
            if errors:
                raise AccountProblem(errors)
            assert member is not None
            keys = self.accounts.keys
            grant_id = str(uuid.uuid4())
            await session.execute(
                pg_insert(tables.role_grants).values(
                    id=grant_id,
                    role=role,
                    member_id=member_id,
                    scope_type=scope_type,
                    scope_id=scope_id or None,
                    granted_by=by.organiser_id,
                )
            )
            await uow.emit(
                # The person who holds the role is the event's subject: a member without an organiser
                # account is named by their member id (notifications then sends them the scope's digest).
                RoleGranted(
                    organiser_id=member_id,
                    member_id=member_id,
                    role=role,  # type: ignore[arg-type]
                    scope_type=scope_type,  # type: ignore[arg-type]
                    scope_id=scope_id or None,
                    email=await keys.seal(session, member_id, member.email_normalised),
                    name=await keys.seal(session, member_id, member.name),
                )
            )
            return grant_id

    async def names_of(self, member_ids: list[str], organiser_ids: list[str]) -> dict[str, str]:
        """Members' and organisers' names by id, for pages that list roles (names, never ids)."""
        m, o = tables.members, tables.organisers
        found: list[Any] = []
        async with self.uows.begin() as uow:
            if member_ids:
                found += (await uow.session.execute(
                    select(m.c.id, m.c.name).where(m.c.id.in_(member_ids), m.c.status != "erased")
                )).all()
            if organiser_ids:
                found += (await uow.session.execute(select(o.c.id, o.c.name).where(o.c.id.in_(organiser_ids)))).all()
        return {r.id: r.name for r in found if r.name}

    async def roles(self, by: auth.OrganiserScope) -> list[Any]:
        """The roles in force within `by`'s part of the network, each with its holder's name (`holder_name`)."""
        g, o, m = tables.role_grants, tables.organisers, tables.members
        holder = func.coalesce(func.nullif(o.c.name, ""), o.c.email_normalised, func.nullif(m.c.name, ""), "A member")
        async with self.uows.begin() as uow:
            session = uow.session
            rows = (
                await session.execute(
                    select(g, holder.label("holder_name"))
                    .select_from(g.outerjoin(o, o.c.id == g.c.organiser_id).outerjoin(m, m.c.id == g.c.member_id))
                    .where(g.c.revoked_at.is_(None))
                    .order_by(g.c.granted_at.desc())
                )
            ).all()
            return [r for r in rows if await self.accounts.within(session, by, r.scope_type, r.scope_id)]

    async def scope_labels(self) -> Callable[[str, str | None], str]:
        """Words for a scope, by the units' names: `the whole network`, `the region West Midlands`."""
        names = {u.id: u.name for rows in (await self.units()).values() for u in rows}
        kinds = {"region": "the region", "group": "the local group", "subteam": "the sub-team"}

        def label(scope_type: str, scope_id: str | None) -> str:
            if scope_type == "network":
                return "the whole network"
            return f"{kinds.get(scope_type, scope_type)} {names.get(scope_id or '', 'that no longer exists')}"

        return label
