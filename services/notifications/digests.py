"""Organisers' digests: who organises where (RoleGranted), what happened where (the activity log), and, at
each organiser's chosen period, a digest of their network, region or group, emailed and kept for their
private Atom feed (feeds.py).

The activity log is built only from events (members joining, meetings and their RSVPs, campaigns and
actions taken), in the consumer group `notifications.activity`; the network's regions and groups are
mirrored from OrganisationUnitDefined so a digest can name places and find the groups of a region.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications.service import NotificationService, first_name_of
from shared.events.catalog import (
    ActionTaken,
    CampaignLaunched,
    DigestPublished,
    MeetingCancelled,
    MeetingScheduled,
    MeetingUpdated,
    MemberErased,
    MemberJoined,
    MemberProfileUpdated,
    OrganisationUnitDefined,
    PromotedFromWaitlist,
    RoleGranted,
    RsvpCancelled,
    RsvpReceived,
)
from shared.events.envelope import Envelope
from shared.logging import get_logger

log = get_logger(__name__)

PERIODS = ("daily", "weekly")
DEFAULT_PERIOD = "weekly"
PERIOD_LENGTH = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
# Digests go out at 07:00 network time: every day, or on Mondays.
NETWORK_TZ = ZoneInfo("Europe/London")
DIGEST_HOUR = 7
UPCOMING_DAYS = 60
MAX_UPCOMING = 12
MEETING_KINDS = ("meeting_scheduled", "meeting_updated", "meeting_cancelled")
RSVP_KINDS = ("rsvp_received", "rsvp_cancelled", "rsvp_promoted")


def next_digest_time(period: str, after: datetime) -> datetime:
    """The next 07:00 (daily) or Monday 07:00 (weekly), network time, strictly after `after`."""
    local = after.astimezone(NETWORK_TZ)
    candidate = local.replace(hour=DIGEST_HOUR, minute=0, second=0, microsecond=0)
    if period == "weekly":
        candidate += timedelta(days=(0 - candidate.weekday()) % 7)
        step = timedelta(days=7)
    else:
        step = timedelta(days=1)
    if candidate <= local:
        candidate += step
    # Wall-clock arithmetic: re-attach the zone so a change of summer time keeps 07:00.
    return candidate.replace(tzinfo=NETWORK_TZ).astimezone(UTC)


def new_feed_token() -> str:
    return secrets.token_urlsafe(24)


# What organisers can edit in emails ----------------------------------------------------------------------

PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")


def fill(template: str, values: dict[str, str]) -> str:
    """Replace the known `{placeholders}` of organiser-written wording; anything else is left as typed."""
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def paragraphs(body: str) -> list[str]:
    """Organiser-written plain text as paragraphs (split on blank lines)."""
    return [p.strip() for p in re.split(r"\n\s*\n", body.replace("\r\n", "\n")) if p.strip()]


class EmailSettings:
    """The network's name, the sender's name, the sign-off and digest wording, editable on the organiser pages.

    Stored as key/value rows; a key nobody has edited falls back to its default.
    """

    LABELS = {
        "network_name": "Network name",
        "sender_name": "Sender's name (shown as who the email is from)",
        "sign_off": "Sign-off at the end of emails",
        "digest_intro": "Opening line of organisers' digests",
    }

    def __init__(self, network_name: str) -> None:
        self.defaults = {
            "network_name": network_name,
            "sender_name": network_name,
            "sign_off": "With thanks,\n{network_name}",
            "digest_intro": "Here is what happened in {scope_name} since your last digest, and what is coming up.",
        }

    async def load(self, session: AsyncSession) -> dict[str, str]:
        s = tables.email_settings
        stored = {r.key: r.value for r in (await session.execute(select(s.c.key, s.c.value))).all()}
        return {k: stored.get(k) or v for k, v in self.defaults.items()}

    async def save(self, session: AsyncSession, values: dict[str, str], updated_by: str | None) -> None:
        s = tables.email_settings
        for key, value in values.items():
            if key not in self.defaults:
                continue
            value = value.strip()
            await session.execute(
                pg_insert(s)
                .values(key=key, value=value, updated_by=updated_by)
                .on_conflict_do_update(
                    index_elements=[s.c.key], set_={"value": value, "updated_by": updated_by, "updated_at": _now()}
                )
            )


def _now() -> datetime:
    return datetime.now(UTC)


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


# What the digests of one pass share ---------------------------------------------------------------------

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
# A window's activity of some kinds, read through ix_activity_kind_occurred_at.
WINDOW_SQL = (
    "WITH src AS MATERIALIZED (SELECT a.id, a.kind, a.occurred_at, a.region_id, a.group_id, a.subject_id, "
    "coalesce(a.detail->>'engagement_level', '') AS level, a.detail->>'kind' AS ask_kind, "
    "a.detail->>'title' AS title, a.detail->>'goal' AS goal, coalesce(a.detail->'group_ids', '[]') AS gids "
    "FROM activity a "
    "WHERE a.kind = ANY(:kinds) AND a.occurred_at >= :start AND a.occurred_at < :end), " + SCOPED_SQL
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


class DigestPass:
    """What the digests built in one pass (send-digests, a minute of the background loop) share.

    The digests of a pass over the same window (a Monday's weekly ones, say: same start, same end) read that
    window's activity once, for every scope at once, through the (kind, occurred_at) index, instead of a few
    queries each; the upcoming meetings and their RSVPs are read once per end. Each digest then takes its
    scope's part (Scope.key), in the order its own queries gave. A pass lasts one run of send-digests or of the
    loop: an event recorded late, after its window was read, is missed by the pass's later digests as it is by
    digests already built (the next window starts at this end)."""

    def __init__(self, digests: Digests) -> None:
        self.digests = digests
        self._windows: dict[tuple[datetime, datetime], WindowSummary] = {}
        self._upcoming: dict[datetime, tuple[list[tuple[str, dict[str, Any]]], dict[ScopeKey, list[int]]]] = {}
        self._rsvps: dict[tuple[datetime, datetime], dict[str, dict[str, int]]] = {}

    async def window(self, session: AsyncSession, start: datetime, end: datetime) -> WindowSummary:
        summary = self._windows.get((start, end))
        if summary is None:
            summary = self._windows[(start, end)] = await self._read_window(session, start, end)
        return summary

    @staticmethod
    async def _without_jit(session: AsyncSession) -> None:
        """The planner overestimates the scope rows (each set-returning function: 100 rows a call), enough to
        JIT-compile the statements: 0.5-2 s at a million members, for statements that run in less. For the rest
        of this digest's transaction only."""
        await session.execute(text("SET LOCAL jit = off"))

    async def _read_window(self, session: AsyncSession, start: datetime, end: datetime) -> WindowSummary:
        def params(*kinds: str) -> dict[str, Any]:
            return {"kinds": list(kinds), "start": start, "end": end}

        await self._without_jit(session)

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
        titles = await self.digests._campaign_titles(session, acted_on)
        return WindowSummary(levels, actions, launched, titles, units)

    async def upcoming_meetings(
        self, session: AsyncSession, scope: Scope, now: datetime, *, window_start: datetime
    ) -> list[dict[str, Any]]:
        """Digests.upcoming_meetings(scope, now, window_start=...) with the default limit: the meetings of the
        whole network are read once a pass (they do not depend on the window), each digest takes its scope's."""
        if now not in self._upcoming:
            self._upcoming[now] = await self._read_upcoming(session, now)
        meetings, by_scope = self._upcoming[now]
        chosen = [meetings[i] for i in by_scope.get(scope.key, [])[:MAX_UPCOMING]]
        if (now, window_start) not in self._rsvps:
            ids = [meeting_id for meeting_id, _ in meetings]
            self._rsvps[(now, window_start)] = await self.digests._rsvp_counts(session, ids, window_start)
        counts = self._rsvps[(now, window_start)]
        result = []
        for meeting_id, detail in chosen:
            m = {"meeting_id": meeting_id, **detail}
            m.update(counts.get(meeting_id, {"going": 0, "waitlisted": 0, "new_rsvps": 0}))
            m["when"] = format_when(m["starts_at"], m.get("timezone") or "Europe/London")
            result.append(m)
        return result

    async def _read_upcoming(
        self, session: AsyncSession, now: datetime
    ) -> tuple[list[tuple[str, dict[str, Any]]], dict[ScopeKey, list[int]]]:
        await self._without_jit(session)
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


# The service ---------------------------------------------------------------------------------------------


# An activity row, once per event (executed with many rows at once: one prepared statement).
_RECORD_ACTIVITY = pg_insert(tables.activity).on_conflict_do_nothing(index_elements=[tables.activity.c.event_id])


class Digests:
    """Use cases of organisers' digests: the organisers and activity mirrors, building and sending digests."""

    def __init__(self, notifications: NotificationService) -> None:
        self.notifications = notifications
        self.db = notifications.db
        self.outbox = notifications.outbox
        self.settings = notifications.settings
        self.email_settings = EmailSettings(self.settings.network_name)
        notifications.parked_handlers[RoleGranted.event_type] = self._role_granted_parked

    # organisers ------------------------------------------------------------------------------------
    async def role_granted(self, session: AsyncSession, envelope: Envelope, event: RoleGranted) -> None:
        """Mirror the organiser (address unsealed once their key is here) and subscribe them to their scope."""
        email = name = None
        if event.email is not None:
            if not await self.notifications.key_ready(session, envelope, event.email.key_id):
                return  # parked until the key arrives (or dropped: the person was erased)
            email = await self.notifications.keys.unseal(session, event.email)
            name = await self.notifications.keys.unseal(session, event.name)
        o = tables.organisers
        changes: dict[str, Any] = {"updated_at": _now()}
        if email is not None:
            changes["email"] = email
        if name is not None:
            changes["name"] = name
        if event.member_id is not None:
            changes["member_id"] = event.member_id
        await session.execute(
            pg_insert(o)
            .values(
                organiser_id=event.organiser_id,
                member_id=event.member_id,
                email=email,
                name=name,
                feed_token=new_feed_token(),
            )
            .on_conflict_do_update(index_elements=[o.c.organiser_id], set_=changes)
        )
        period = (
            await session.execute(select(o.c.digest_period).where(o.c.organiser_id == event.organiser_id))
        ).scalar_one()
        s = tables.digest_subscriptions
        await session.execute(
            pg_insert(s)
            .values(
                organiser_id=event.organiser_id,
                role=event.role,
                scope_type=event.scope_type,
                scope_id=event.scope_id or "",
                next_digest_at=next_digest_time(period, _now()),
            )
            .on_conflict_do_nothing(constraint="uq_digest_subscriptions_scope")
        )

    async def _role_granted_parked(self, session: AsyncSession, envelope: Envelope) -> None:
        await self.role_granted(session, envelope, RoleGranted.model_validate(envelope.data))

    async def organiser(self, session: AsyncSession, organiser_id: str) -> Any:
        o = tables.organisers
        return (await session.execute(select(o).where(o.c.organiser_id == organiser_id))).first()

    async def organiser_by_feed_token(self, session: AsyncSession, token: str) -> Any:
        o = tables.organisers
        return (await session.execute(select(o).where(o.c.feed_token == token))).first()

    async def subscriptions_of(self, session: AsyncSession, organiser_id: str) -> list[Any]:
        s = tables.digest_subscriptions
        rows = await session.execute(select(s).where(s.c.organiser_id == organiser_id).order_by(s.c.id))
        return list(rows.all())

    async def choose_period(self, session: AsyncSession, organiser_id: str, period: str) -> None:
        """Switch an organiser between daily and weekly digests; the next one follows the new rhythm."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}")
        o, s = tables.organisers, tables.digest_subscriptions
        await session.execute(
            update(o).where(o.c.organiser_id == organiser_id).values(digest_period=period, updated_at=_now())
        )
        await session.execute(
            update(s).where(s.c.organiser_id == organiser_id).values(next_digest_at=next_digest_time(period, _now()))
        )

    async def renew_feed_token(self, session: AsyncSession, organiser_id: str) -> str:
        """Revoke the organiser's feed address by giving them a new one."""
        token = new_feed_token()
        o = tables.organisers
        await session.execute(
            update(o).where(o.c.organiser_id == organiser_id).values(feed_token=token, feed_token_created_at=_now())
        )
        return token

    async def digests_of(self, session: AsyncSession, organiser_id: str, limit: int = 50) -> list[Any]:
        d = tables.digests
        rows = await session.execute(
            select(d).where(d.c.organiser_id == organiser_id).order_by(d.c.created_at.desc(), d.c.id).limit(limit)
        )
        return list(rows.all())

    # the network's units ---------------------------------------------------------------------------
    async def unit_defined(self, session: AsyncSession, envelope: Envelope, event: OrganisationUnitDefined) -> None:
        u = tables.units
        values = {"kind": event.kind, "name": event.name, "parent_id": event.parent_id, "updated_at": _now()}
        await session.execute(
            pg_insert(u)
            .values(unit_id=event.unit_id, **values)
            .on_conflict_do_update(index_elements=[u.c.unit_id], set_=values)
        )

    async def _unit(self, session: AsyncSession, unit_id: str | None) -> Any:
        if not unit_id:
            return None
        u = tables.units
        return (await session.execute(select(u).where(u.c.unit_id == unit_id))).first()

    async def _place_of(
        self, session: AsyncSession, scope_type: str, scope_id: str | None
    ) -> tuple[str | None, str | None]:
        """(region_id, group_id) of something scoped to a region, group or sub-team."""
        if scope_type == "region":
            return scope_id, None
        if scope_type == "group":
            group = await self._unit(session, scope_id)
            return (group.parent_id if group else None), scope_id
        if scope_type == "subteam":
            subteam = await self._unit(session, scope_id)
            group = await self._unit(session, subteam.parent_id if subteam else None)
            return (group.parent_id if group else None), (group.unit_id if group else None)
        return None, None

    # activity --------------------------------------------------------------------------------------
    async def _record(
        self,
        session: AsyncSession,
        envelope: Envelope,
        kind: str,
        *,
        subject_id: str | None,
        region_id: str | None = None,
        group_id: str | None = None,
        detail: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        a = tables.activity
        await session.execute(
            pg_insert(a)
            .values(
                event_id=str(envelope.event_id),
                kind=kind,
                occurred_at=occurred_at or envelope.occurred_at,
                region_id=region_id,
                group_id=group_id,
                subject_id=subject_id,
                detail=detail or {},
            )
            .on_conflict_do_nothing(index_elements=[a.c.event_id])
        )

    async def member_joined(self, session: AsyncSession, envelope: Envelope, event: MemberJoined) -> None:
        await self.members_joined(session, [(envelope, event)])

    async def members_joined(self, session: AsyncSession, joins: list[tuple[Envelope, MemberJoined]]) -> None:
        """`member_joined` for a run of joins: their activity rows in one round trip."""
        rows = []
        for envelope, event in joins:
            group_id = event.group_ids[0] if event.group_ids else event.suggested_group_id
            group_ids = list(dict.fromkeys([*event.group_ids, *([group_id] if group_id else [])]))
            region_id = event.region_id
            if region_id is None and group_id:
                region_id, _ = await self._place_of(session, "group", group_id)
            rows.append(
                {
                    "event_id": str(envelope.event_id),
                    "kind": "member_joined",
                    "occurred_at": event.joined_at or envelope.occurred_at,
                    "region_id": region_id,
                    "group_id": group_id,
                    "subject_id": event.member_id,
                    "detail": {
                        "engagement_level": event.engagement_level,
                        "group_ids": group_ids,
                        "source": event.source,
                    },
                }
            )
        if rows:
            await session.execute(_RECORD_ACTIVITY, rows)

    async def meeting_changed(
        self, session: AsyncSession, envelope: Envelope, event: MeetingScheduled | MeetingUpdated
    ) -> None:
        region_id, group_id = await self._place_of(session, event.scope_type, event.scope_id)
        kind = "meeting_updated" if isinstance(event, MeetingUpdated) else "meeting_scheduled"
        await self._record(
            session,
            envelope,
            kind,
            subject_id=event.meeting_id,
            region_id=region_id,
            group_id=group_id,
            detail={
                "title": event.title,
                "kind": event.kind,
                "scope_type": event.scope_type,
                "scope_id": event.scope_id,
                "starts_at": event.starts_at.isoformat(),
                "ends_at": event.ends_at.isoformat(),
                "timezone": event.timezone,
                "venue": event.venue,
                "capacity": event.capacity,
                "public_url": event.public_url,
                "campaign_id": event.campaign_id,
                "parent_meeting_id": event.parent_meeting_id,
            },
        )

    async def _meeting_place(self, session: AsyncSession, meeting_id: str) -> tuple[str | None, str | None]:
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

    async def meeting_cancelled(self, session: AsyncSession, envelope: Envelope, event: MeetingCancelled) -> None:
        region_id, group_id = await self._meeting_place(session, event.meeting_id)
        await self._record(
            session,
            envelope,
            "meeting_cancelled",
            subject_id=event.meeting_id,
            region_id=region_id,
            group_id=group_id,
            detail={"reason": event.reason},
        )

    async def rsvp_changed(
        self, session: AsyncSession, envelope: Envelope, event: RsvpReceived | RsvpCancelled | PromotedFromWaitlist
    ) -> None:
        region_id, group_id = await self._meeting_place(session, event.meeting_id)
        if isinstance(event, RsvpReceived):
            kind, detail = "rsvp_received", {"status": event.status, "guests": event.guests}
        elif isinstance(event, RsvpCancelled):
            kind, detail = "rsvp_cancelled", {}
        else:
            kind, detail = "rsvp_promoted", {}
        await self._record(
            session,
            envelope,
            kind,
            subject_id=event.meeting_id,
            region_id=region_id,
            group_id=group_id,
            detail={"rsvp_id": event.rsvp_id, **detail},
        )

    async def campaign_launched(self, session: AsyncSession, envelope: Envelope, event: CampaignLaunched) -> None:
        region_id, group_id = await self._place_of(session, event.scope_type, event.scope_id)
        await self._record(
            session,
            envelope,
            "campaign_launched",
            subject_id=event.campaign_id,
            region_id=region_id,
            group_id=group_id,
            detail={
                "title": event.title,
                "goal": event.goal,
                "scope_type": event.scope_type,
                "scope_id": event.scope_id,
            },
        )

    async def action_taken(self, session: AsyncSession, envelope: Envelope, event: ActionTaken) -> None:
        region_id, group_id = event.region_id, event.group_id
        if region_id is None and group_id:
            region_id, _ = await self._place_of(session, "group", group_id)
        await self._record(
            session,
            envelope,
            "action_taken",
            subject_id=event.campaign_id,
            region_id=region_id,
            group_id=group_id,
            detail={"ask_id": event.ask_id, "kind": event.kind, "action_id": event.action_id},
            occurred_at=event.taken_at,
        )

    async def member_profile_updated(
        self, session: AsyncSession, envelope: Envelope, event: MemberProfileUpdated
    ) -> None:
        """An organiser who is a member changed their address: their digests follow it."""
        if event.email is None and event.name is None:
            return
        o = tables.organisers
        if (await session.execute(select(o.c.organiser_id).where(o.c.member_id == event.member_id))).first() is None:
            return
        try:
            email = await self.notifications.keys.unseal(session, event.email)
            name = await self.notifications.keys.unseal(session, event.name)
        except LookupError:
            return  # key gone (erased) or not here yet: RoleGranted's copy stays
        values: dict[str, Any] = {"updated_at": _now()}
        if email:
            values["email"] = email
        if name:
            values["name"] = name
        await session.execute(update(o).where(o.c.member_id == event.member_id).values(**values))

    async def member_erased(self, session: AsyncSession, envelope: Envelope, event: MemberErased) -> None:
        """Forget an erased member here: their place in the activity log becomes anonymous, and an organiser
        who was that member is removed with their digests."""
        a, o = tables.activity, tables.organisers
        await session.execute(
            update(a).where(a.c.subject_id == event.member_id, a.c.kind == "member_joined").values(subject_id=None)
        )
        ids = (await session.execute(select(o.c.organiser_id).where(o.c.member_id == event.member_id))).scalars().all()
        if ids:
            await session.execute(delete(tables.digests).where(tables.digests.c.organiser_id.in_(ids)))
            await session.execute(
                delete(tables.digest_subscriptions).where(tables.digest_subscriptions.c.organiser_id.in_(ids))
            )
            await session.execute(delete(o).where(o.c.organiser_id.in_(ids)))

    # reading the activity log ----------------------------------------------------------------------
    async def upcoming_meetings(
        self,
        session: AsyncSession,
        scope: Scope,
        now: datetime,
        *,
        limit: int = MAX_UPCOMING,
        window_start: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Meetings in the scope that have not started, soonest first, with their RSVP counts."""
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
        counts = await self._rsvp_counts(session, [m["meeting_id"] for m in meetings], window_start)
        for m in meetings:
            m.update(counts.get(m["meeting_id"], {"going": 0, "waitlisted": 0, "new_rsvps": 0}))
            m["when"] = format_when(m["starts_at"], m.get("timezone") or "Europe/London")
        return meetings

    async def _rsvp_counts(
        self, session: AsyncSession, meeting_ids: list[str], since: datetime | None
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
        counts: dict[str, dict[str, int]] = {m: {"going": 0, "waitlisted": 0, "new_rsvps": 0} for m in meeting_ids}
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

    async def compose(
        self,
        session: AsyncSession,
        scope: Scope,
        start: datetime,
        end: datetime,
        digest_pass: DigestPass | None = None,
    ) -> dict[str, Any]:
        """What a digest of `scope` for [start, end) says, as data (rendered by `render`, stored as JSON).

        The figures come from `digest_pass`, which reads each window's activity once for every scope (a pass
        builds many digests over the same window); without one, a pass of this digest alone."""
        if scope.scope_type == "subteam":
            subteam = await self._unit(session, scope.scope_id)
            scope = Scope("group", subteam.parent_id if subteam and subteam.parent_id else scope.scope_id)
        digest_pass = digest_pass or DigestPass(self)
        window = await digest_pass.window(session, start, end)
        key = scope.key
        by_level = window.levels.get(key, [])
        campaigns: dict[str, dict[str, Any]] = {}
        for campaign_id, ask_kind, n in window.actions.get(key, []):
            c = campaigns.setdefault(
                campaign_id,
                {
                    "campaign_id": campaign_id,
                    "title": window.titles.get(campaign_id, "A campaign"),
                    "total": 0,
                    "by_kind": {},
                },
            )
            c["total"] += n
            c["by_kind"][ask_kind or "action"] = n
        upcoming = await digest_pass.upcoming_meetings(session, scope, end, window_start=start)
        for m in upcoming:
            m.pop("timezone", None)
        return {
            "scope_type": scope.scope_type,
            "new_members": {
                "total": sum(n for _, n in by_level),
                "by_level": [{"level": level, "label": level_label(level), "count": n} for level, n in by_level],
            },
            "upcoming_meetings": upcoming,
            "actions": {
                "total": sum(c["total"] for c in campaigns.values()),
                "campaigns": sorted(campaigns.values(), key=lambda c: -c["total"]),
            },
            "campaigns_launched": [
                {"campaign_id": campaign_id, "title": title, "goal": goal}
                for campaign_id, title, goal in window.launched.get(key, [])
            ],
            "elsewhere": await self._elsewhere(session, scope, window),
        }

    async def _campaign_titles(self, session: AsyncSession, ids: list[str]) -> dict[str, str]:
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

    async def _elsewhere(self, session: AsyncSession, scope: Scope, window: WindowSummary) -> dict[str, Any]:
        """What other groups are working on: a group's sibling groups in its region, a region's groups, or (for
        the whole network) each region. Never anything outside the organiser's region."""
        if scope.scope_type == "group":
            me = await self._unit(session, scope.scope_id)
            if me is None or not me.parent_id:
                return {"heading": "", "units": []}
            heading, unit_kind, parent, exclude = "Other groups in your region", "group", me.parent_id, scope.scope_id
        elif scope.scope_type == "region":
            heading, unit_kind, parent, exclude = "Your region's groups", "group", scope.scope_id, ""
        else:
            heading, unit_kind, parent, exclude = "Around the network", "region", None, ""
        if unit_kind == "group":
            units = [u for u in window.units["group"] if u.parent_id == parent and u.unit_id != exclude]
        else:
            units = window.units["region"]
        return {
            "heading": heading,
            "units": [
                {
                    "unit_id": u.unit_id,
                    "name": u.name,
                    "new_members": u.new_members,
                    "actions": u.actions,
                    "meetings": list(u.meetings),
                    "campaigns": list(u.campaigns),
                    "summary": unit_summary(u.new_members, u.actions, list(u.meetings), list(u.campaigns)),
                }
                for u in units
            ],
        }

    # building and sending --------------------------------------------------------------------------
    async def scope_name(self, session: AsyncSession, scope_type: str, scope_id: str, network_name: str) -> str:
        if scope_type == "network":
            return network_name
        unit = await self._unit(session, scope_id)
        return unit.name if unit else f"your {scope_type}"

    def render(self, digest: dict[str, Any], wording: dict[str, str], organiser_name: str | None) -> tuple[str, str]:
        """The plain-text and HTML email of a digest (also the Atom entry's content)."""
        network_name = wording["network_name"]
        values = {
            "network_name": network_name,
            "scope_name": digest["scope_name"],
            "period": digest["period"],
            "first_name": first_name_of(organiser_name),
        }
        return self.notifications.renderer.render(
            "digest",
            network_name=network_name,
            name=first_name_of(organiser_name),
            intro=fill(wording["digest_intro"], values),
            sign_off=fill(wording["sign_off"], values).splitlines(),
            digest=digest,
            settings_url=f"{self.settings.public_base_url}/notifications/organise/digests",
        )

    async def build(
        self,
        session: AsyncSession,
        subscription: Any,
        end: datetime,
        *,
        period: str | None = None,
        digest_pass: DigestPass | None = None,
    ) -> str | None:
        """Build, store, email and announce one digest of `subscription` up to `end`; None when there was
        nothing to say (no digest is kept, the organiser gets no email). `digest_pass`: what the digests of the
        same pass share (see DigestPass)."""
        organiser = await self.organiser(session, subscription.organiser_id)
        if organiser is None:
            return None
        period = period or organiser.digest_period
        start = subscription.last_digest_at or (end - PERIOD_LENGTH[period])
        scope = Scope(subscription.scope_type, subscription.scope_id)
        content = await self.compose(session, scope, start, end, digest_pass)
        wording = await self.email_settings.load(session)
        scope_name = await self.scope_name(session, scope.scope_type, scope.scope_id, wording["network_name"])
        entries = (
            content["new_members"]["total"]
            + len(content["upcoming_meetings"])
            + content["actions"]["total"]
            + len(content["campaigns_launched"])
            + len(content["elsewhere"]["units"])
        )
        if entries == 0:
            return None
        digest_id = str(uuid.uuid4())
        local_end = end.astimezone(NETWORK_TZ)
        title = f"{scope_name}: your {period} digest, {local_end.day} {local_end:%B %Y}"
        digest = {
            **content,
            "id": digest_id,
            "title": title,
            "scope_name": scope_name,
            "period": period,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "since": format_day(start),
        }
        body_text, body_html = self.render(digest, wording, organiser.name)
        await session.execute(
            tables.digests.insert().values(
                id=digest_id,
                organiser_id=organiser.organiser_id,
                subscription_id=subscription.id,
                scope_type=subscription.scope_type,
                scope_id=subscription.scope_id,
                scope_name=scope_name,
                period=period,
                period_start=start,
                period_end=end,
                title=title,
                content=digest,
                body_text=body_text,
                body_html=body_html,
                entries=entries,
            )
        )
        if organiser.email:
            await self.notifications.queue(
                session,
                kind="digest",
                subject_ref=digest_id,
                recipient_id=organiser.organiser_id,
                recipient_email=organiser.email,
                subject=title,
                body_text=body_text,
                body_html=body_html,
                correlation_id=f"digest-{digest_id}",
            )
        await self.outbox.add_events(
            session,
            [
                DigestPublished(
                    digest_id=digest_id,
                    organiser_id=organiser.organiser_id,
                    period=period,  # type: ignore[arg-type]
                    scope_type=subscription.scope_type,
                    scope_id=subscription.scope_id or None,
                    entries=entries,
                )
            ],
            correlation_id=f"digest-{digest_id}",
        )
        return digest_id

    async def run_due(self, now: datetime | None = None) -> int:
        """Build every digest whose time has come; each in its own transaction, locked so instances share."""
        now = now or _now()
        built = 0
        s = tables.digest_subscriptions
        digest_pass = DigestPass(self)
        while True:
            async with self.db.transaction() as session:
                sub = (
                    await session.execute(
                        select(s)
                        .where(s.c.next_digest_at <= now)
                        .order_by(s.c.next_digest_at)
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    )
                ).first()
                if sub is None:
                    return built
                organiser = await self.organiser(session, sub.organiser_id)
                period = organiser.digest_period if organiser else DEFAULT_PERIOD
                try:
                    async with session.begin_nested():
                        if await self.build(session, sub, now, digest_pass=digest_pass):
                            built += 1
                except Exception as exc:  # one broken digest must not stop everyone else's: try it again later
                    log.warning("digest failed", subscription_id=sub.id, error=repr(exc))
                    await session.execute(
                        update(s).where(s.c.id == sub.id).values(next_digest_at=now + timedelta(hours=1))
                    )
                    continue
                await session.execute(
                    update(s)
                    .where(s.c.id == sub.id)
                    .values(last_digest_at=now, next_digest_at=next_digest_time(period, now))
                )

    async def run_now(self, now: datetime | None = None, organiser_id: str | None = None) -> int:
        """Build a digest for every subscription (or one organiser's) at once, whatever their schedule."""
        now = now or _now()
        s = tables.digest_subscriptions
        async with self.db.transaction() as session:
            query = select(s.c.id).order_by(s.c.id)
            if organiser_id:
                query = query.where(s.c.organiser_id == organiser_id)
            ids = (await session.execute(query)).scalars().all()
        built = 0
        digest_pass = DigestPass(self)
        for sub_id in ids:
            async with self.db.transaction() as session:
                sub = (
                    await session.execute(select(s).where(s.c.id == sub_id).with_for_update(skip_locked=True))
                ).first()
                if sub is None:
                    continue
                if await self.build(session, sub, now, digest_pass=digest_pass):
                    built += 1
                await session.execute(update(s).where(s.c.id == sub.id).values(last_digest_at=now))
        return built


class DigestLoop:
    """Builds the digests that are due, every `interval_s` seconds, for as long as the service runs."""

    def __init__(self, digests: Digests, interval_s: float = 60.0) -> None:
        self.digests = digests
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            try:
                built = await self.digests.run_due()
                if built:
                    log.info("digests built", count=built)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("digest pass failed", error=repr(exc))
            await asyncio.sleep(self.interval_s)


# Presentation helpers ------------------------------------------------------------------------------------


def unit_summary(new_members: int, actions: int, meetings: list[str], campaigns: list[str]) -> str:
    """One line of what a group or region did, e.g. "2 new members; 9 actions; meetings: Street stall"."""
    parts = []
    if new_members:
        parts.append(f"{new_members} new member{'s' if new_members != 1 else ''}")
    if actions:
        parts.append(f"{actions} action{'s' if actions != 1 else ''}")
    if meetings:
        parts.append("meetings: " + ", ".join(meetings))
    if campaigns:
        parts.append("new campaigns: " + ", ".join(campaigns))
    return "; ".join(parts)


def level_label(level: str) -> str:
    return level.replace("_", " ").replace("-", " ").capitalize() if level else "Not chosen yet"


def format_when(starts_at: str | datetime, timezone: str = "Europe/London") -> str:
    at = datetime.fromisoformat(starts_at) if isinstance(starts_at, str) else starts_at
    try:
        local = at.astimezone(ZoneInfo(timezone))
    except (KeyError, ValueError):
        local = at.astimezone(NETWORK_TZ)
    return f"{local:%a} {local.day} {local:%b}, {local:%H:%M}"


def format_day(at: datetime) -> str:
    local = at.astimezone(NETWORK_TZ)
    return f"{local:%A} {local.day} {local:%B}"


# Command line --------------------------------------------------------------------------------------------


def commands(sub: Any) -> dict[str, Any]:
    """`send-digests [--now]` and `send-follow-ups` for `python -m services.notifications`."""
    digest_parser = sub.add_parser("send-digests", help="build the digests that are due (--now: everyone's, now)")
    digest_parser.add_argument("--now", action="store_true", help="every organiser's digest now, whatever its schedule")
    digest_parser.add_argument("--organiser", help="only this organiser's (with --now)")
    sub.add_parser("send-follow-ups", help="queue the follow-up emails that are due")
    return {"send-digests": _send_digests_command, "send-follow-ups": _send_follow_ups_command}


async def _with_service(run: Any) -> Any:
    from shared.config import get_settings
    from shared.db import Database
    from shared.outbox import Outbox

    settings = get_settings()
    db = Database(settings.database_url, pool_size=2)
    try:
        notifications = NotificationService(db, Outbox(tables.delivery.outbox), settings)
        return await run(notifications)
    finally:
        await db.dispose()


def _send_digests_command(args: Any) -> int:
    async def run(notifications: NotificationService) -> int:
        digests = Digests(notifications)
        if args.now:
            return await digests.run_now(organiser_id=args.organiser)
        return await digests.run_due()

    built = asyncio.run(_with_service(run))
    print(f"{built} digest(s) built; the running service emails them")
    return 0


def _send_follow_ups_command(args: Any) -> int:
    from services.notifications.followups import FollowUps

    async def run(notifications: NotificationService) -> dict[str, int]:
        return await FollowUps(notifications, Digests(notifications)).run_due()

    outcome = asyncio.run(_with_service(run))
    print(", ".join(f"{n} {what}" for what, n in outcome.items()) + "; the running service emails them")
    return 0
