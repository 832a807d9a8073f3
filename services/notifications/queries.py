"""Notifications' tuned SQL, as query functions: the activity log read for digests (every scope of a window at
once), upcoming meetings and their RSVP counts, a subject's key state, an announcement's next recipients and
its batch of deliveries. The use cases call these; the statements stay in one place where their plans are
explained.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.domain import GONE, Audience
from services.notifications.suppression import BULK_KINDS

UPCOMING_DAYS = 60
MAX_UPCOMING = 12
MEETING_KINDS = ("meeting_scheduled", "meeting_updated", "meeting_cancelled")
RSVP_KINDS = ("rsvp_received", "rsvp_cancelled", "rsvp_promoted")
NO_RSVPS = {"going": 0, "waitlisted": 0, "new_rsvps": 0}


@dataclass(frozen=True)
class Scope:
    """The part of the network a digest covers: ('network', ''), ('region', id) or ('group', id)."""

    scope_type: str
    scope_id: str = ""

    def condition(self, alias: str = "a") -> str:
        """SQL over activity rows (`alias`) and the units mirror: is this row about this scope?"""
        if self.scope_type == "network":
            return "TRUE"
        if self.scope_type == "region":
            return (
                f"({alias}.region_id = :scope_id OR {alias}.group_id IN "
                "(SELECT unit_id FROM units WHERE parent_id = :scope_id))"
            )
        return f"({alias}.group_id = :scope_id OR jsonb_exists(coalesce({alias}.detail->'group_ids', '[]'), :scope_id))"

    @property
    def key(self) -> ScopeKey:
        """The scope's entry in a pass's summaries (DigestPass): the rows `condition` selects for it."""
        if self.scope_type == "network":
            return ("network", "")
        return ("region" if self.scope_type == "region" else "group", self.scope_id)


ScopeKey = tuple[str, str]  # ('network', ''), ('region', id) or ('group', id), as Scope.key

# Every row of `src` (id, region_id, group_id, gids = detail->'group_ids') with each scope whose digest it
# belongs to: for all scopes at once, exactly the rows Scope.condition selects for one. The network's: all of
# them; a region's: placed in it, or in a unit whose parent it is; a group's: its group_id, or any id that
# jsonb_exists finds in gids (the candidates, an array's elements, an object's keys or a lone string, are each
# checked with jsonb_exists itself). Each scope's rows are then read by equality instead of an OR per scope.
SCOPED_SQL = (
    "keys AS ("
    "SELECT id, 'network' AS scope_type, '' AS scope_id FROM src "
    "UNION ALL SELECT id, 'region', region_id FROM src WHERE region_id IS NOT NULL "
    "UNION ALL SELECT src.id, 'region', u.parent_id FROM src JOIN units u ON u.unit_id = src.group_id "
    "WHERE u.parent_id IS NOT NULL "
    "UNION ALL SELECT id, 'group', group_id FROM src WHERE group_id IS NOT NULL "
    "UNION ALL SELECT src.id, 'group', c.unit_id FROM src CROSS JOIN LATERAL ("
    "SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof(src.gids) = 'array' THEN src.gids ELSE '[]' END) "
    "UNION ALL SELECT jsonb_object_keys(CASE WHEN jsonb_typeof(src.gids) = 'object' THEN src.gids ELSE '{}' END) "
    "UNION ALL SELECT src.gids #>> '{}' WHERE jsonb_typeof(src.gids) = 'string'"
    ") AS c(unit_id) WHERE src.gids <> '[]' AND jsonb_exists(src.gids, c.unit_id)), "
    "scoped AS (SELECT DISTINCT scope_type, scope_id, id FROM keys) "
)
# A window's activity of some kinds, read through ix_activity_kind_occurred_at. An arrival marked gone (the member
# left or was erased since: activity.py) is not a new member, as on the dashboard (joined and still a member).
WINDOW_SQL = (
    "WITH src AS MATERIALIZED (SELECT a.id, a.kind, a.occurred_at, a.region_id, a.group_id, a.subject_id, "
    "coalesce(a.detail->>'engagement_level', '') AS level, a.detail->>'kind' AS ask_kind, "
    "a.detail->>'title' AS title, a.detail->>'goal' AS goal, coalesce(a.detail->'group_ids', '[]') AS gids "
    "FROM activity a "
    "WHERE a.kind = ANY(:kinds) AND a.occurred_at >= :start AND a.occurred_at < :end "
    f"AND NOT (a.kind = 'member_joined' AND jsonb_exists(a.detail, '{GONE}'))), " + SCOPED_SQL
)
SUMMARY_KINDS = ("member_joined", "action_taken", "meeting_scheduled", "campaign_launched")


@dataclass(frozen=True)
class UnitSummary:
    """One group's or region's line in "what other groups are working on"."""

    unit_id: str
    name: str
    parent_id: str | None
    new_members: int
    actions: int
    meetings: tuple[str, ...]
    campaigns: tuple[str, ...]


@dataclass
class WindowSummary:
    """What happened in [start, end), for every scope: each list in the order the digest shows it."""

    levels: dict[ScopeKey, list[tuple[str, int]]]  # (engagement level, joined), most first
    actions: dict[ScopeKey, list[tuple[str, str | None, int]]]  # (campaign, ask kind, actions) by campaign
    launched: dict[ScopeKey, list[tuple[str, str | None, str | None]]]  # (campaign, title, goal), in order
    titles: dict[str, str]  # campaign titles (the latest launch) of the campaigns acted on
    units: dict[str, list[UnitSummary]]  # 'group' and 'region': those with activity, by name


async def without_jit(session: AsyncSession) -> None:
    """The planner overestimates the scope rows (each set-returning function: 100 rows a call), enough to
    JIT-compile the statements: 0.5-2 s at a million members, for statements that run in less. For the rest
    of this digest's transaction only."""
    await session.execute(text("SET LOCAL jit = off"))


async def read_window(session: AsyncSession, start: datetime, end: datetime) -> WindowSummary:
    """What happened in [start, end), for every scope at once (see SCOPED_SQL)."""

    def params(*kinds: str) -> dict[str, Any]:
        return {"kinds": list(kinds), "start": start, "end": end}

    await without_jit(session)
    levels: dict[ScopeKey, list[tuple[str, int]]] = {}
    for r in await session.execute(
        text(
            WINDOW_SQL + "SELECT s.scope_type, s.scope_id, a.level, "
            "count(*) AS n FROM scoped s JOIN src a USING (id) GROUP BY 1, 2, 3 ORDER BY 1, 2, 4 DESC, 3"
        ),
        params("member_joined"),
    ):
        levels.setdefault((r.scope_type, r.scope_id), []).append((r.level, r.n))
    actions: dict[ScopeKey, list[tuple[str, str | None, int]]] = {}
    for r in await session.execute(
        text(
            WINDOW_SQL + "SELECT s.scope_type, s.scope_id, a.subject_id AS campaign_id, a.ask_kind, "
            "count(*) AS n FROM scoped s JOIN src a USING (id) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 5 DESC, 4"
        ),
        params("action_taken"),
    ):
        actions.setdefault((r.scope_type, r.scope_id), []).append((r.campaign_id, r.ask_kind, r.n))
    launched: dict[ScopeKey, list[tuple[str, str | None, str | None]]] = {}
    for r in await session.execute(
        text(
            WINDOW_SQL + "SELECT s.scope_type, s.scope_id, a.subject_id AS campaign_id, a.title, a.goal "
            "FROM scoped s JOIN src a USING (id) ORDER BY 1, 2, a.occurred_at, a.id"
        ),
        params("campaign_launched"),
    ):
        launched.setdefault((r.scope_type, r.scope_id), []).append((r.campaign_id, r.title, r.goal))
    units: dict[str, list[UnitSummary]] = {"group": [], "region": []}
    for r in await session.execute(
        text(
            WINDOW_SQL + "SELECT s.scope_type, u.unit_id, u.name, u.parent_id, "
            "count(*) FILTER (WHERE a.kind = 'member_joined') AS new_members, "
            "count(*) FILTER (WHERE a.kind = 'action_taken') AS actions, "
            "coalesce(array_agg(DISTINCT a.title) FILTER (WHERE a.kind = 'meeting_scheduled'), '{}') AS meetings, "
            "coalesce(array_agg(DISTINCT a.title) FILTER (WHERE a.kind = 'campaign_launched'), '{}') AS campaigns "
            "FROM scoped s JOIN src a USING (id) JOIN units u ON u.unit_id = s.scope_id AND u.kind = s.scope_type "
            "WHERE s.scope_type IN ('group', 'region') "
            "GROUP BY s.scope_type, u.unit_id, u.name, u.parent_id ORDER BY u.name, u.unit_id"
        ),
        params(*SUMMARY_KINDS),
    ):
        units[r.scope_type].append(
            UnitSummary(
                r.unit_id,
                r.name,
                r.parent_id,
                r.new_members,
                r.actions,
                tuple(sorted(r.meetings)),
                tuple(sorted(r.campaigns)),
            )
        )
    acted_on = sorted({campaign_id for rows in actions.values() for campaign_id, _, _ in rows})
    titles = await campaign_titles(session, acted_on)
    return WindowSummary(levels, actions, launched, titles, units)


async def read_upcoming(
    session: AsyncSession, now: datetime
) -> tuple[list[tuple[str, dict[str, Any]]], dict[ScopeKey, list[int]]]:
    """The whole network's meetings that have not started (soonest first), and each scope's of them (indexes)."""
    await without_jit(session)
    rows = (
        await session.execute(
            text(
                "WITH latest AS (SELECT DISTINCT ON (subject_id) id, kind, subject_id, region_id, group_id, "
                "detail FROM activity WHERE kind = ANY(:kinds) ORDER BY subject_id, id DESC), "
                "described AS (SELECT DISTINCT ON (subject_id) subject_id, detail FROM activity "
                "WHERE kind IN ('meeting_scheduled', 'meeting_updated') ORDER BY subject_id, id DESC), "
                "src AS MATERIALIZED (SELECT a.id, a.region_id, a.group_id, "
                "coalesce(a.detail->'group_ids', '[]') AS gids, d.subject_id AS meeting_id, d.detail "
                "FROM latest a JOIN described d USING (subject_id) "
                "WHERE a.kind <> 'meeting_cancelled' AND (d.detail->>'starts_at')::timestamptz > :now "
                "AND (d.detail->>'starts_at')::timestamptz < :until), "
                + SCOPED_SQL
                + "SELECT a.meeting_id, a.detail, array_agg(s.scope_type) AS scope_types, "
                "array_agg(s.scope_id) AS scope_ids FROM src a JOIN scoped s USING (id) "
                "GROUP BY a.id, a.meeting_id, a.detail "
                "ORDER BY (a.detail->>'starts_at')::timestamptz, a.meeting_id"
            ),
            {"kinds": list(MEETING_KINDS), "now": now, "until": now + timedelta(days=UPCOMING_DAYS)},
        )
    ).all()
    meetings: list[tuple[str, dict[str, Any]]] = []
    by_scope: dict[ScopeKey, list[int]] = {}
    for r in rows:
        for key in zip(r.scope_types, r.scope_ids, strict=True):
            by_scope.setdefault(key, []).append(len(meetings))
        meetings.append((r.meeting_id, r.detail))
    return meetings, by_scope


async def upcoming_meetings(
    session: AsyncSession,
    scope: Scope,
    now: datetime,
    *,
    limit: int = MAX_UPCOMING,
    window_start: datetime | None = None,
) -> list[dict[str, Any]]:
    """Meetings in the scope that have not started, soonest first, with their RSVP counts (without `when`)."""
    rows = (
        await session.execute(
            text(
                "WITH latest AS (SELECT DISTINCT ON (subject_id) id, kind, subject_id, region_id, group_id, "
                "detail FROM activity WHERE kind = ANY(:kinds) ORDER BY subject_id, id DESC), "
                "described AS (SELECT DISTINCT ON (subject_id) subject_id, detail FROM activity "
                "WHERE kind IN ('meeting_scheduled', 'meeting_updated') ORDER BY subject_id, id DESC) "
                "SELECT d.subject_id AS meeting_id, d.detail FROM latest a JOIN described d USING (subject_id) "
                "WHERE a.kind <> 'meeting_cancelled' AND (d.detail->>'starts_at')::timestamptz > :now "
                "AND (d.detail->>'starts_at')::timestamptz < :until "
                f"AND {scope.condition('a')} "
                "ORDER BY (d.detail->>'starts_at')::timestamptz LIMIT :limit"
            ),
            {
                "kinds": list(MEETING_KINDS),
                "now": now,
                "until": now + timedelta(days=UPCOMING_DAYS),
                "limit": limit,
                "scope_id": scope.scope_id,
            },
        )
    ).all()
    meetings = [{"meeting_id": r.meeting_id, **r.detail} for r in rows]
    counts = await rsvp_counts(session, [m["meeting_id"] for m in meetings], window_start)
    for m in meetings:
        m.update(counts.get(m["meeting_id"], NO_RSVPS))
    return meetings


async def rsvp_counts(
    session: AsyncSession, meeting_ids: list[str], since: datetime | None
) -> dict[str, dict[str, int]]:
    """Each meeting's places taken (with guests), waitlist, and RSVPs received since `since`."""
    if not meeting_ids:
        return {}
    rows = (
        await session.execute(
            text(
                "SELECT DISTINCT ON (detail->>'rsvp_id') subject_id, kind, detail FROM activity "
                "WHERE kind = ANY(:kinds) AND subject_id = ANY(:ids) ORDER BY detail->>'rsvp_id', id DESC"
            ),
            {"kinds": list(RSVP_KINDS), "ids": meeting_ids},
        )
    ).all()
    counts: dict[str, dict[str, int]] = {m: dict(NO_RSVPS) for m in meeting_ids}
    for r in rows:
        c = counts[r.subject_id]
        if r.kind == "rsvp_promoted" or (r.kind == "rsvp_received" and r.detail.get("status") == "going"):
            c["going"] += 1 + int(r.detail.get("guests") or 0)
        elif r.kind == "rsvp_received":
            c["waitlisted"] += 1
    if since is not None:
        fresh = (
            await session.execute(
                text(
                    "SELECT subject_id, count(*) AS n FROM activity WHERE kind = 'rsvp_received' "
                    "AND subject_id = ANY(:ids) AND occurred_at >= :since GROUP BY subject_id"
                ),
                {"ids": meeting_ids, "since": since},
            )
        ).all()
        for r in fresh:
            counts[r.subject_id]["new_rsvps"] = r.n
    return counts


async def campaign_titles(session: AsyncSession, ids: list[str]) -> dict[str, str]:
    """Each campaign's title, as its latest launch gave it."""
    if not ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT DISTINCT ON (subject_id) subject_id, detail->>'title' AS title FROM activity "
            "WHERE kind = 'campaign_launched' AND subject_id = ANY(:ids) ORDER BY subject_id, id DESC"
        ),
        {"ids": ids},
    )
    return {r.subject_id: r.title for r in rows.all()}


async def meetings_in_places(
    session: AsyncSession, unit_ids: list[str], now: datetime, *, limit: int = 200
) -> list[Any]:
    """Scheduled meetings that have not started, soonest first, network-wide or in any of `unit_ids` (regions,
    groups, sub-teams), from the meetings mirror: what a welcome picks each joiner's nearest from."""
    m = tables.meetings
    rows = await session.execute(
        select(
            m.c.meeting_id, m.c.title, m.c.starts_at, m.c.timezone, m.c.venue, m.c.public_url, m.c.scope_type,
            m.c.scope_id,
        )
        .where(
            m.c.status != "cancelled",
            m.c.starts_at > now,
            or_(m.c.scope_type == "network", m.c.scope_id.in_(unit_ids)),
        )
        .order_by(m.c.starts_at)
        .limit(limit)
    )
    return list(rows.all())


async def unit_names(session: AsyncSession, unit_ids: list[str]) -> dict[str, str]:
    """The names of the units mirror's regions, groups and sub-teams among `unit_ids`."""
    if not unit_ids:
        return {}
    u = tables.units
    rows = await session.execute(select(u.c.unit_id, u.c.name).where(u.c.unit_id.in_(unit_ids)))
    return {r.unit_id: r.name for r in rows.all()}


async def meeting_place(session: AsyncSession, meeting_id: str) -> tuple[str | None, str | None]:
    """(region_id, group_id) of a meeting, as its latest description in the activity log places it."""
    a = tables.activity
    row = (
        await session.execute(
            select(a.c.region_id, a.c.group_id)
            .where(a.c.subject_id == meeting_id, a.c.kind.in_(("meeting_scheduled", "meeting_updated")))
            .order_by(a.c.id.desc())
            .limit(1)
        )
    ).first()
    return (row.region_id, row.group_id) if row else (None, None)


# The network's units ----------------------------------------------------------------------------------------


async def unit(session: AsyncSession, unit_id: str | None) -> Any:
    """A region, group or sub-team of the units mirror (None when unknown)."""
    if not unit_id:
        return None
    u = tables.units
    return (await session.execute(select(u).where(u.c.unit_id == unit_id))).first()


async def place_of(session: AsyncSession, scope_type: str, scope_id: str | None) -> tuple[str | None, str | None]:
    """(region_id, group_id) of something scoped to a region, group or sub-team."""
    if scope_type == "region":
        return scope_id, None
    if scope_type == "group":
        group = await unit(session, scope_id)
        return (group.parent_id if group else None), scope_id
    if scope_type == "subteam":
        subteam = await unit(session, scope_id)
        group = await unit(session, subteam.parent_id if subteam else None)
        return (group.parent_id if group else None), (group.unit_id if group else None)
    return None, None


# Keys ----------------------------------------------------------------------------------------------------

# A subject's key, whether it was destroyed (erased), and whether events wait for it (see domain.key_decision).
KEY_STATES_SQL = text(
    "SELECT i.id, k.key, k.destroyed_at IS NOT NULL, EXISTS (SELECT 1 FROM parked_events p WHERE p.subject_id = i.id) "
    "FROM unnest(CAST(:ids AS text[])) AS i(id) LEFT JOIN subject_keys k ON k.key_id = i.id"
)


async def key_states(session: AsyncSession, ids: list[str]) -> dict[str, tuple[bytes | None, bool, bool]]:
    """Per subject: (its key or None, whether it was destroyed, whether events of it are parked)."""
    return {row[0]: (row[1], row[2], row[3]) for row in (await session.execute(KEY_STATES_SQL, {"ids": ids})).all()}


# Announcements -------------------------------------------------------------------------------------------

# A batch's deliveries (an announcement's, a mailing's) in one statement; the unique (kind, subject, recipient)
# skips those queued before.
QUEUE_BATCH_SQL = text(
    "INSERT INTO deliveries (id, kind, subject_ref, recipient_id, recipient_email, subject, body_text, body_html, "
    "correlation_id, priority) "
    "SELECT t.id, :kind, :subject_ref, t.recipient_id, t.recipient_email, :subject, t.body_text, t.body_html, "
    "CAST(:correlation_id AS varchar), :priority "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:recipient_ids AS varchar[]), CAST(:emails AS varchar[]), "
    "CAST(:texts AS text[]), CAST(:htmls AS text[])) AS t(id, recipient_id, recipient_email, body_text, body_html) "
    "ON CONFLICT ON CONSTRAINT uq_deliveries_kind_subject_recipient DO NOTHING RETURNING 1"
)


async def queue_batch(
    session: AsyncSession,
    *,
    kind: str,
    subject_ref: str,
    subject: str,
    correlation_id: str | None,
    emails: list[tuple[str, str, str, str]],
) -> int:
    """One email to many, `emails` each (recipient id, address, text, HTML), in one statement of arrays (a batch's
    rows through SQLAlchemy's executemany cost more CPU than rendering them); bulk kinds after what people are
    waiting for. How many were new."""
    if not emails:
        return 0
    recipient_ids, addresses, texts, htmls = (list(column) for column in zip(*emails, strict=True))
    result = await session.execute(
        QUEUE_BATCH_SQL,
        {
            "kind": kind,
            "subject_ref": subject_ref,
            "subject": subject,
            "correlation_id": correlation_id,
            "priority": 1 if kind in BULK_KINDS else 0,
            "ids": [str(uuid.uuid4()) for _ in emails],
            "recipient_ids": recipient_ids,
            "emails": addresses,
            "texts": texts,
            "htmls": htmls,
        },
    )
    return len(result.all())


async def audience_after(
    session: AsyncSession, audience: Audience, cursor: str | None, limit: int
) -> list[dict[str, Any]]:
    """The next `limit` members (by id, after `cursor`) of an announcement's audience: member_id, email, name."""
    r = tables.recipients
    conditions = [
        r.c.email.is_not(None),
        r.c.email_consent.is_(True),
        r.c.status == "confirmed",
        or_(r.c.email_topics.is_(None), r.c.email_topics.any(audience.topic)),
    ]
    if audience.field == "region_id":
        conditions.append(r.c.region_id == audience.unit_id)
    elif audience.field is not None:
        conditions.append(r.c[audience.field].any(audience.unit_id))
    if cursor:
        conditions.append(r.c.member_id > cursor)
    rows = await session.execute(
        select(r.c.member_id, r.c.email, r.c.name).where(and_(*conditions)).order_by(r.c.member_id).limit(limit)
    )
    return [dict(row) for row in rows.mappings()]


async def suppressed_among(session: AsyncSession, address_keys: list[str]) -> set[str]:
    """Which of these addresses (keyed hashes) are on the suppression list, for whatever reason."""
    s = tables.suppressions
    return set((await session.execute(select(s.c.email).where(s.c.email.in_(address_keys)))).scalars())
