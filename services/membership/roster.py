"""Organisers' view of members: a list scoped to what they look after, search and filters, CSV export, one
member's details, and the audit log every view and export is written to.

Out of scope is the same as not existing: a member outside an organiser's scope is "not found".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, and_, any_, exists, func, insert, literal, or_, select, union_all
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import visitors
from sqlalchemy.sql.util import ClauseAdapter

from services.membership import db as tables
from services.membership.directory import names_of_units, read_units, read_units_of
from services.membership.domain import DEFAULT_SOURCE, api_key_of
from shared import auth
from shared.exports import EXPORT_BATCH, csv_chunks
from shared.uow import UnitsOfWork

MAX_PER_PAGE = 100
CSV_COLUMNS = (
    "id",
    "name",
    "email",
    "postcode",
    "region",
    "groups",
    "subteams",
    "interests",
    "engagement_level",
    "skills",
    "time_available",
    "organisation",
    "status",
    "email_consent",
    "joined_at",
    "confirmed_at",
)


@dataclass
class MemberFilters:
    """What an organiser narrows the list to; empty means everything in their scope."""

    q: str = ""
    region_id: str = ""
    group_id: str = ""
    subteam_id: str = ""
    interest: str = ""
    engagement_level: str = ""
    confirmed: str = ""  # "yes" | "no" | ""
    status: str = ""  # pending | confirmed | left | "" (everyone but the erased)
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v and k != "extra"}


def actor_of(who: auth.OrganiserScope) -> str:
    return f"api-key:{who.key_id}" if who.key_id else f"organiser:{who.organiser_id}"


def in_scope(who: auth.OrganiserScope) -> ColumnElement[bool]:
    """The members an organiser (or API key) looks after."""
    m, mg, ms, g = tables.members, tables.member_groups, tables.member_subteams, tables.local_groups
    if who.scope_type == "network":
        return literal(True)
    if who.scope_type == "region":
        in_region_group = exists().where(
            mg.c.member_id == m.c.id, mg.c.group_id == g.c.id, g.c.region_id == who.scope_id
        )
        return or_(m.c.region_id == who.scope_id, in_region_group)
    if who.scope_type == "group":
        return exists().where(mg.c.member_id == m.c.id, mg.c.group_id == who.scope_id)
    if who.scope_type == "subteam":
        return exists().where(ms.c.member_id == m.c.id, ms.c.subteam_id == who.scope_id)
    return literal(False)


def _search(f: MemberFilters) -> ColumnElement[bool] | None:
    """The search box: a part of the name or of the address (the trigram indexes answer it), or None."""
    if not f.q.strip():
        return None
    m = tables.members
    pattern = f"%{f.q.strip().lower().replace('%', '').replace('_', '')}%"
    return or_(func.lower(m.c.name).like(pattern), m.c.email_normalised.like(pattern))


def _filtered(f: MemberFilters, *, with_search: bool = True) -> list[ColumnElement[bool]]:
    """The conditions of the filters (and of the search box, unless not `with_search`)."""
    m, mg, ms = tables.members, tables.member_groups, tables.member_subteams
    conditions: list[ColumnElement[bool]] = [m.c.status != "erased"]
    if with_search and (search := _search(f)) is not None:
        conditions.append(search)
    if f.region_id:
        conditions.append(m.c.region_id == f.region_id)
    if f.group_id:
        conditions.append(exists().where(mg.c.member_id == m.c.id, mg.c.group_id == f.group_id))
    if f.subteam_id:
        conditions.append(exists().where(ms.c.member_id == m.c.id, ms.c.subteam_id == f.subteam_id))
    if f.interest:
        conditions.append(literal(f.interest) == any_(m.c.interests))
    if f.engagement_level:
        conditions.append(m.c.engagement_level == f.engagement_level)
    if f.confirmed == "yes":
        conditions.append(m.c.confirmed_at.is_not(None))
    elif f.confirmed == "no":
        conditions.append(m.c.confirmed_at.is_(None))
    if f.status:
        conditions.append(m.c.status == f.status)
    return conditions


def _capped_count_and_page(
    where: ColumnElement[bool], up_to: int, per_page: int, offset: int, search: ColumnElement[bool] | None = None
) -> Any:
    """How many members match `where`, counting up to `up_to + 1`, and the ids of one page of them newest first when
    no more than `up_to` match: one statement that reads each match once. Walking the newest-first index instead finds
    a page of a few matches (a group organiser's search: 185 members read for 25 at 20,000) only after reading
    thousands that do not match; sorting the counted matches costs nothing beside counting them.

    With `search` (the members who match are those of `where` it finds), the members it finds are read first, from
    the trigram indexes, with the columns `where` reads, and `where` is checked on those columns: left to itself,
    the planner walked every member in id order to meet a big group's members (1.4 s for a surname in a group of
    121,631 at a million). Each find is read from the table once (reading them again by id cost a lookup each), and
    with no second LIKE on them the planner expects as many finds as there are, so a group's scope is checked by
    one hash join with the group's members, read from member_groups' (group_id, member_id) index alone (membership
    migration 0022; the EXPLAIN and the numbers: docs/benchmarks.md, "The group organiser's search at a million,
    again")."""
    m = tables.members
    source: Any = m
    if search is not None:
        read = {c.key for c in visitors.iterate(where) if isinstance(c, Column) and c.table is m}
        found = (select(*(c for c in m.c if c.key in read | {"id", "joined_at"})).where(search)
                 .cte("found").prefix_with("MATERIALIZED"))
        where = ClauseAdapter(found).traverse(where)
        source = found
    matches = (select(source.c.id, source.c.joined_at).select_from(source).where(where).limit(up_to + 1)
               .cte("matches").prefix_with("MATERIALIZED"))
    one_page = (select(matches.c.id, matches.c.joined_at).order_by(matches.c.joined_at.desc(), matches.c.id)
                .limit(per_page).offset(offset).subquery())
    ids = select(func.array_agg(aggregate_order_by(one_page.c.id, one_page.c.joined_at.desc(), one_page.c.id)))
    return select(select(func.count()).select_from(matches).scalar_subquery(), ids.scalar_subquery())


def consent_source(source: str, key_names: dict[str, str]) -> str:
    """Where a consent was given, in words for an organiser (the record keeps an id: an API key's, an RSVP's)."""
    if (key_id := api_key_of(source)) is not None:
        name = key_names.get(key_id)
        return f"Added through the API with the key \u201c{name}\u201d" if name else "Added through the API"
    kind, _, ref = source.partition(":")
    if kind == "rsvp" and ref:
        return "An RSVP to a meeting"
    if kind == "action" and ref:
        return "Taking action in a campaign"
    if source == DEFAULT_SOURCE:
        return "The join form"
    return source  # a form's own label for itself, e.g. a partner site's "partner-campaign-page"


def _export_row(r: Any, names: dict[str, str]) -> list[Any]:
    """A member as a row of the export (CSV_COLUMNS), places and partner by name."""
    organisation = names.get(r.organisation_id or "", "") or (r.organisation_name or "")
    return [
        r.id,
        r.name,
        r.email_normalised,
        r.postcode or "",
        names.get(r.region_id or "", ""),
        "; ".join(names.get(g, g) for g in r.export_group_ids or []),
        "; ".join(names.get(s, s) for s in r.export_subteam_ids or []),
        "; ".join(r.interests),
        r.engagement_level,
        r.skills or "",
        r.time_available or "",
        organisation,
        r.status,
        "yes" if r.email_consent else "no",
        r.joined_at.isoformat(),
        r.confirmed_at.isoformat() if r.confirmed_at else "",
    ]


class Roster:
    def __init__(self, uows: UnitsOfWork) -> None:
        self.uows = uows

    @staticmethod
    async def audit(
        session: AsyncSession, actor: str, action: str, member_id: str | None = None, **detail: Any
    ) -> None:
        await session.execute(
            insert(tables.audit_log).values(actor=actor, action=action, member_id=member_id, detail=detail)
        )

    async def joined_since(self, who: auth.OrganiserScope, since: datetime) -> int:
        """How many members in `who`'s scope joined since `since` and are still members (a count: no one is shown)."""
        m = tables.members
        where = and_(in_scope(who), m.c.joined_at >= since, m.c.status.not_in(("left", "erased")))
        async with self.uows.begin() as uow:
            return int((await uow.session.execute(select(func.count()).select_from(m).where(where))).scalar_one())

    async def page(
        self,
        who: auth.OrganiserScope,
        filters: MemberFilters,
        page: int = 1,
        per_page: int = 25,
        also: Sequence[ColumnElement[bool]] = (),
        count_up_to: int | None = None,
    ) -> tuple[list[Any], int]:
        """One page of the members in scope matching the filters (and the conditions `also`, an API's own
        filter), and how many match; audited. With `count_up_to`, the count stops there: more than that many
        match when it is `count_up_to + 1` (a count of every match reads every member at a million)."""
        m = tables.members
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        page = max(page, 1)
        search = _search(filters)
        rest = and_(in_scope(who), *_filtered(filters, with_search=False), *also)
        where = rest if search is None else and_(rest, search)
        newest_first = select(m).where(where).order_by(m.c.joined_at.desc(), m.c.id)
        offset = (page - 1) * per_page
        async with self.uows.begin() as uow:
            session = uow.session
            if count_up_to is None:
                total = (await session.execute(select(func.count()).select_from(m).where(where))).scalar_one()
                rows = (await session.execute(newest_first.limit(per_page).offset(offset))).all()
            else:
                if search is not None and who.scope_type != "network":
                    # A part of the network searching: the search's finds first, the rest of `where` checked on
                    # them (the whole network's own plan is quicker).
                    capped = _capped_count_and_page(rest, count_up_to, per_page, offset, search)
                else:
                    capped = _capped_count_and_page(where, count_up_to, per_page, offset)
                total, ids = (await session.execute(capped)).one()
                if total <= count_up_to:  # the page comes from the matches just counted, sorted
                    wanted = select(m).where(m.c.id.in_(ids or [])).order_by(m.c.joined_at.desc(), m.c.id)
                    rows = (await session.execute(wanted)).all() if ids else []
                else:  # many match, so they lie close together in the newest-first index: walk it
                    rows = (await session.execute(newest_first.limit(per_page).offset(offset))).all()
            await self.audit(
                session, actor_of(who), "members.list", filters=filters.as_dict(), page=page, shown=len(rows)
            )
        return list(rows), int(total)

    async def export_csv(self, who: auth.OrganiserScope, filters: MemberFilters) -> tuple[AsyncIterator[str], int]:
        """Every member in scope matching the filters as CSV, streamed (the chunks), and how many match: audited
        with that number before the first byte. The rows are read by one server-side cursor, a batch at a time (one
        statement: one snapshot of the members, whatever the export's size)."""
        m = tables.members
        where = and_(in_scope(who), *_filtered(filters))
        async with self.uows.begin() as uow:
            count = int((await uow.session.execute(select(func.count()).select_from(m).where(where))).scalar_one())
            await self.audit(uow.session, actor_of(who), "members.export", filters=filters.as_dict(), exported=count)
        return csv_chunks(CSV_COLUMNS, self._export_batches(where)), count

    async def _export_batches(self, where: ColumnElement[bool]) -> AsyncIterator[list[list[Any]]]:
        m, mg, ms = tables.members, tables.member_groups, tables.member_subteams
        groups = select(func.array_agg(mg.c.group_id)).where(mg.c.member_id == m.c.id).scalar_subquery()
        subteams = select(func.array_agg(ms.c.subteam_id)).where(ms.c.member_id == m.c.id).scalar_subquery()
        query = (select(m, groups.label("export_group_ids"), subteams.label("export_subteam_ids")).where(where)
                 .order_by(m.c.joined_at, m.c.id).execution_options(yield_per=EXPORT_BATCH))
        async with self.uows.begin() as uow:
            names = await self.unit_names(uow.session)
            result = await uow.session.stream(query)
            async for batch in result.partitions(EXPORT_BATCH):
                yield [_export_row(r, names) for r in batch]

    async def member(self, who: auth.OrganiserScope, member_id: str, *, audit: bool = True) -> dict[str, Any] | None:
        """Everything an organiser may see of one member in their scope, or None (also when out of scope)."""
        async with self.uows.begin() as uow:
            session = uow.session
            row = await self.scoped_member(session, who, member_id)
            if row is None:
                return None
            details = await self.details(session, row)
            if audit:
                await self.audit(session, actor_of(who), "member.view", member_id=member_id)
        return details

    @staticmethod
    async def scoped_member(session: AsyncSession, who: auth.OrganiserScope, member_id: str) -> Any | None:
        """The member's row if `who` looks after them (and they are not erased), else None."""
        m = tables.members
        found = await session.execute(select(m).where(m.c.id == member_id, m.c.status != "erased", in_scope(who)))
        return found.first()

    @staticmethod
    async def details(session: AsyncSession, row: Any, names: dict[str, str] | None = None) -> dict[str, Any]:
        return (await Roster.details_of(session, [row], names))[0]

    @staticmethod
    async def details_of(session: AsyncSession, rows: Sequence[Any],
                         names: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """`details` of each member of `rows`, with one query per table for them all (a page of the OSDI people
        collection read about eight per person before: bench/pages.py); `names`: the units' names, if the caller
        has read them already (otherwise those of the members' own units are read, not every unit's)."""
        mg, ms, c, g = tables.member_groups, tables.member_subteams, tables.consent_records, tables.role_grants
        ids = [row.id for row in rows]
        groups: dict[str, list[str]] = {i: [] for i in ids}
        subteams: dict[str, list[str]] = {i: [] for i in ids}
        consents: dict[str, list[Any]] = {i: [] for i in ids}
        roles: dict[str, list[Any]] = {i: [] for i in ids}
        places = union_all(
            select(literal("group").label("kind"), mg.c.member_id, mg.c.group_id.label("unit_id"))
            .where(mg.c.member_id.in_(ids)),
            select(literal("subteam"), ms.c.member_id, ms.c.subteam_id).where(ms.c.member_id.in_(ids)),
        )
        for r in (await session.execute(places)).all():
            (groups if r.kind == "group" else subteams)[r.member_id].append(r.unit_id)
        for r in (await session.execute(select(c).where(c.c.member_id.in_(ids)).order_by(c.c.recorded_at))).all():
            consents[r.member_id].append(r)
        for r in (await session.execute(select(g).where(g.c.member_id.in_(ids), g.c.revoked_at.is_(None)))).all():
            roles[r.member_id].append(r)
        key_ids = {key for found in consents.values() for r in found if (key := api_key_of(r.source)) is not None}
        k = tables.api_keys
        key_names = dict((await session.execute(select(k.c.id, k.c.name).where(k.c.id.in_(key_ids)))).all()
                         ) if key_ids else {}
        if names is None:
            names = names_of_units(await read_units_of(session, [
                *(u for row in rows for u in (row.region_id, row.suggested_group_id, row.organisation_id)),
                *(u for found in (groups, subteams) for units in found.values() for u in units),
            ]))
        return [
            {
                "member": row,
                "region": names.get(row.region_id or ""),
                "suggested_group": names.get(row.suggested_group_id or ""),
                "organisation": names.get(row.organisation_id or "") or row.organisation_name,
                "groups": [(gid, names.get(gid, gid)) for gid in groups[row.id]],
                "subteams": [(sid, names.get(sid, sid)) for sid in subteams[row.id]],
                "consents": consents[row.id],
                "consent_sources": {r.source: consent_source(r.source, key_names) for r in consents[row.id]},
                "roles": roles[row.id],
            }
            for row in rows
        ]

    @staticmethod
    async def unit_names(session: AsyncSession) -> dict[str, str]:
        """Every region's, group's, sub-team's and partner's name by id (one statement)."""
        return names_of_units(await read_units(session))

    async def audit_entries(self, who: auth.OrganiserScope, limit: int = 200) -> list[Any]:
        """The audit log, for network organisers; others see what they did themselves."""
        a = tables.audit_log
        query = select(a).order_by(a.c.id.desc()).limit(limit)
        if not who.is_network:
            query = query.where(a.c.actor == actor_of(who))
        async with self.uows.begin() as uow:
            session = uow.session
            return list((await session.execute(query)).all())

