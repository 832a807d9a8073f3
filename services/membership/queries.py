"""Membership's queries over its members and their choices, shared by its use cases: the join form's options,
a member locked for a change, their groups and sub-teams, and the statements a batch of joins is written with.

The insert statements are built once: executed with parameters, SQLAlchemy compiles each of them once per
process, and with several rows each is one INSERT … VALUES of them all ("insertmanyvalues").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership.domain import Choice, JoinOptions, MemberRecord, Unit

INSERT_MEMBER = (
    pg_insert(tables.members)
    .on_conflict_do_nothing(index_elements=[tables.members.c.email_normalised])
    .returning(tables.members.c.id)
)
INSERT_MEMBER_GROUP = pg_insert(tables.member_groups).on_conflict_do_nothing()
INSERT_MEMBER_SUBTEAM = pg_insert(tables.member_subteams).on_conflict_do_nothing()


async def load_join_options(session: AsyncSession) -> JoinOptions:
    """The join form's choices as organisers configured them."""
    i, lv, cw = tables.interests, tables.engagement_levels, tables.consent_wordings
    interests = (await session.execute(select(i.c.key, i.c.label).where(i.c.active).order_by(i.c.position))).all()
    levels = (await session.execute(select(lv.c.key, lv.c.label).where(lv.c.active).order_by(lv.c.position))).all()
    wordings = (
        await session.execute(
            select(cw.c.version, cw.c.wording, cw.c.retired_at)
            .where(cw.c.channel == "email")
            .order_by(cw.c.introduced_at, cw.c.version)
        )
    ).all()
    current = [w for w in wordings if w.retired_at is None] or list(wordings)
    r, g, s, p = tables.regions, tables.local_groups, tables.subteams, tables.partner_organisations
    regions = (await session.execute(select(r.c.id, r.c.slug, r.c.name).order_by(r.c.name))).all()
    groups = (await session.execute(select(g.c.id, g.c.slug, g.c.name, g.c.region_id).order_by(g.c.name))).all()
    subteams = (await session.execute(select(s.c.id, s.c.slug, s.c.name).order_by(s.c.name))).all()
    partners = (await session.execute(select(p.c.id, p.c.slug, p.c.name).order_by(p.c.name))).all()
    pd = tables.postcode_districts
    prefixes = {row.prefix: (row.region_id, row.group_id) for row in (await session.execute(select(pd))).all()}
    return JoinOptions(
        interests=tuple(Choice(x.key, x.label) for x in interests),
        levels=tuple(Choice(x.key, x.label) for x in levels),
        regions=tuple(Unit(x.id, x.slug, x.name) for x in regions),
        groups=tuple(Unit(x.id, x.slug, x.name, x.region_id) for x in groups),
        subteams=tuple(Unit(x.id, x.slug, x.name) for x in subteams),
        partners=tuple(Unit(x.id, x.slug, x.name) for x in partners),
        consent_version=current[-1].version if current else "",
        consent_wording=current[-1].wording if current else "",
        consent_versions=frozenset(w.version for w in wordings),
        postcode_prefixes=prefixes,
    )


async def lock_member(session: AsyncSession, member_id: str) -> Any:
    """The member's row, locked until the transaction ends; None if there is none."""
    m = tables.members
    return (await session.execute(select(m).where(m.c.id == member_id).with_for_update())).first()


async def lock_member_by_email(session: AsyncSession, email_normalised: str) -> Any:
    """The member with this address, locked (they exist: perhaps committed a moment ago by a simultaneous join)."""
    m = tables.members
    return (await session.execute(select(m).where(m.c.email_normalised == email_normalised).with_for_update())).one()


async def member_row(session: AsyncSession, member_id: str) -> Any:
    return (await session.execute(select(tables.members).where(tables.members.c.id == member_id))).one()


async def update_member(session: AsyncSession, member_id: str, values: dict[str, Any]) -> None:
    m = tables.members
    await session.execute(update(m).where(m.c.id == member_id).values(**values))


async def units_of(session: AsyncSession, member_id: str) -> tuple[list[str], list[str]]:
    """A member's local groups and sub-teams, in the order they joined them."""
    mg, ms = tables.member_groups, tables.member_subteams
    groups = (
        (await session.execute(select(mg.c.group_id).where(mg.c.member_id == member_id).order_by(mg.c.joined_at)))
        .scalars()
        .all()
    )
    subteams = (
        (await session.execute(select(ms.c.subteam_id).where(ms.c.member_id == member_id).order_by(ms.c.joined_at)))
        .scalars()
        .all()
    )
    return list(groups), list(subteams)


async def member_record(session: AsyncSession, row: Any) -> MemberRecord:
    """What the joining rules need of a stored member: the row and their groups and sub-teams."""
    group_ids, subteam_ids = await units_of(session, row.id)
    return MemberRecord(
        id=row.id,
        name=row.name,
        postcode=row.postcode,
        region_id=row.region_id,
        suggested_group_id=row.suggested_group_id,
        engagement_level=row.engagement_level,
        interests=list(row.interests),
        organisation_id=row.organisation_id,
        status=row.status,
        confirmed_at=row.confirmed_at,
        email_consent=row.email_consent,
        group_ids=group_ids,
        subteam_ids=subteam_ids,
    )


async def add_units(session: AsyncSession, member_id: str, group_ids: list[str], subteam_ids: list[str]) -> None:
    """Add a member to groups and sub-teams (those they are in already stay as they were)."""
    if group_ids:
        await session.execute(INSERT_MEMBER_GROUP, [{"member_id": member_id, "group_id": g} for g in group_ids])
    if subteam_ids:
        await session.execute(INSERT_MEMBER_SUBTEAM, [{"member_id": member_id, "subteam_id": s} for s in subteam_ids])


async def insert_new_members(session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
    """Insert members whose address is not a member yet, in one statement; the ids of those inserted."""
    return {row.id for row in (await session.execute(INSERT_MEMBER, rows)).all()}


async def insert_units_of_many(
    session: AsyncSession, groups: list[dict[str, str]], subteams: list[dict[str, str]]
) -> None:
    """Several new members' groups and sub-teams: one statement per table."""
    if groups:
        await session.execute(INSERT_MEMBER_GROUP, groups)
    if subteams:
        await session.execute(INSERT_MEMBER_SUBTEAM, subteams)


async def current_privacy_version(session: AsyncSession) -> int | None:
    """The version of the privacy notice in force (the newest), None before any was published."""
    return (await session.execute(select(func.max(tables.privacy_notices.c.version)))).scalar()


# The notice in force, read by the INSERT itself (a join's hot path: no round trip of its own).
_INSERT_CONSENT = insert(tables.consent_records).values(
    privacy_version=select(func.max(tables.privacy_notices.c.version)).scalar_subquery()
)


async def insert_consent_records(session: AsyncSession, rows: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Consent records, each naming the privacy notice in force as it is recorded."""
    await session.execute(_INSERT_CONSENT, [rows] if isinstance(rows, dict) else rows)


async def insert_member_keys(session: AsyncSession, keys: dict[str, bytes]) -> None:
    """New members' keys (new ids: a plain insert of them all, compiled once)."""
    await session.execute(insert(tables.subject_keys), [{"key_id": k, "key": v} for k, v in keys.items()])
