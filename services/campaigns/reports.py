"""Network reporting's figures: what the organisers' dashboard (and its CSV export) shows for one scope, each
computed when asked from the read model that projection.py writes (`rpt_*`). Every statement names tables without
a schema, so `rebuild-reporting --check` can run it against its shadow schema through `search_path`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns.domain import ASK_KIND_LABELS, LadderRung
from shared.auth import OrganiserScope


@dataclass(frozen=True)
class Scope:
    """Whose figures: the whole network, or one region, group or sub-team (and everything under it)."""

    scope_type: str = "network"
    scope_id: str | None = None

    @classmethod
    def of(cls, organiser: OrganiserScope) -> Scope:
        return cls(organiser.scope_type, organiser.scope_id)

    @property
    def network(self) -> bool:
        return self.scope_type == "network" or self.scope_id is None

    def members(self, alias: str) -> str:
        """Members in scope as membership counts them (`roster.in_scope`): a region's live there or belong to one of
        its local groups, so its figures equal the number of members its organisers see."""
        if self.network:
            return "TRUE"
        return {"region": "({a}.region_id = :sid OR {a}.group_ids && "
                          "ARRAY(SELECT unit_id FROM rpt_units WHERE parent_id = :sid)::varchar[])",
                "group": ":sid = ANY({a}.group_ids)",
                "subteam": ":sid = ANY({a}.subteam_ids)"}[self.scope_type].format(a=alias)

    def actions(self, alias: str) -> str:
        if self.network:
            return "TRUE"
        return {"region": f"{alias}.place_region = :sid", "group": f":sid = ANY({alias}.place_groups)",
                "subteam": f":sid = ANY({alias}.place_subteams)"}[self.scope_type]

    def scoped(self, alias: str) -> str:
        """Something with its own scope (a meeting, a campaign) that lies within this one."""
        if self.network:
            return "TRUE"
        below = ("SELECT unit_id FROM rpt_units WHERE parent_id = :sid OR parent_id IN "
                 "(SELECT unit_id FROM rpt_units WHERE parent_id = :sid)")
        return f"({alias}.scope_id = :sid OR {alias}.scope_id IN ({below}))"

    def params(self) -> dict[str, Any]:
        return {} if self.network else {"sid": self.scope_id}


PLACED_ACTIONS = """
WITH placed AS (
  SELECT a.*,
         coalesce(a.region_id, m1.region_id, m2.region_id) AS place_region,
         coalesce(m1.group_ids, m2.group_ids,
                  CASE WHEN a.group_id IS NULL THEN '{}'::varchar[] ELSE ARRAY[a.group_id]::varchar[] END)
           AS place_groups,
         coalesce(m1.subteam_ids, m2.subteam_ids, '{}'::varchar[]) AS place_subteams
  FROM rpt_actions a
  LEFT JOIN rpt_members m1 ON m1.member_id = a.member_id
  LEFT JOIN rpt_members m2 ON a.member_id IS NULL AND m2.source = 'action:' || a.action_id
)
"""


async def units_by_id(session: AsyncSession) -> dict[str, Any]:
    """The network's units as the read model knows them (kind, name, parent), by id."""
    rows = (await session.execute(text("SELECT unit_id, kind, name, parent_id FROM rpt_units"))).all()
    return {r.unit_id: r for r in rows}


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


class Reports:
    """The dashboard's figures, each computed from the read model for one scope."""

    def __init__(self, ladder: Sequence[LadderRung]) -> None:
        self.ladder = tuple(ladder)

    async def names(self, session: AsyncSession) -> dict[str, str]:
        return dict((await session.execute(text("SELECT unit_id, name FROM rpt_units"))).all())

    async def growth(self, session: AsyncSession, scope: Scope, *, weeks: int = 12,
                     today: date | None = None) -> dict[str, Any]:
        """Members per place (regions for the network, groups for a region) at the end of each of the last weeks."""
        today = today or datetime.now(UTC).date()
        starts = [week_start(today) - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]
        ends = [datetime.combine(s + timedelta(days=7), datetime.min.time(), UTC) for s in starts]
        begins = [datetime.combine(s, datetime.min.time(), UTC) for s in starts]
        rows = (await session.execute(text(
            f"SELECT m.region_id, m.group_ids, m.joined_at, m.left_at FROM rpt_members m WHERE {scope.members('m')}"
        ), scope.params())).all()
        names = await self.names(session)
        by_groups = not scope.network
        series: dict[str, dict[str, Any]] = {}
        for r in rows:
            places = ([g for g in r.group_ids] or [None]) if by_groups else [r.region_id]
            if scope.scope_type == "group":
                places = [scope.scope_id]
            for place in places:
                key = place or ""
                s = series.setdefault(key, {"id": place, "name": names.get(place or "", place or
                                            ("No group" if by_groups else "No region")),
                                            "members": [0] * weeks, "joined": [0] * weeks})
                for i in range(weeks):
                    if r.joined_at < ends[i] and (r.left_at is None or r.left_at >= ends[i]):
                        s["members"][i] += 1
                    if begins[i] <= r.joined_at < ends[i]:
                        s["joined"][i] += 1
        ordered = sorted(series.values(), key=lambda s: (-s["members"][-1], s["name"], s["id"] or ""))
        # A member in two groups counts in both groups' series, but once in the scope's totals.
        totals = {
            "members": [sum(1 for r in rows if r.joined_at < ends[i] and (r.left_at is None or r.left_at >= ends[i]))
                        for i in range(weeks)],
            "joined": [sum(1 for r in rows if begins[i] <= r.joined_at < ends[i]) for i in range(weeks)],
        }
        return {"weeks": [s.isoformat() for s in starts], "place_kind": "group" if by_groups else "region",
                "series": ordered, "totals": totals}

    async def funnel(self, session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
        """Active members at each level of the ladder or above (everyone is at the first)."""
        base = self.ladder[0].level
        rows = (await session.execute(text(
            "SELECT coalesce(l.level, :base) AS level, count(*) AS n FROM rpt_members m "
            f"LEFT JOIN rpt_levels l ON l.member_id = m.member_id WHERE m.status = 'active' AND {scope.members('m')} "
            "GROUP BY 1"
        ), {"base": base, **scope.params()})).all()
        rank = {r.level: i for i, r in enumerate(self.ladder)}
        at = [0] * len(self.ladder)
        for level, n in rows:
            at[rank.get(level, 0)] += n
        return [{"level": r.level, "label": r.label, "members": sum(at[i:]), "at_level": at[i]}
                for i, r in enumerate(self.ladder)]

    async def attendance(self, session: AsyncSession, scope: Scope, *, limit: int = 200) -> dict[str, Any]:
        """Per meeting that has started: places taken and people who came; the rate overall."""
        rows = (await session.execute(text(
            "SELECT mt.meeting_id, mt.title, mt.starts_at, "
            "count(r.rsvp_id) FILTER (WHERE r.status = 'going') AS going, count(r.attended_at) AS attended "
            "FROM rpt_meetings mt LEFT JOIN rpt_rsvps r ON r.meeting_id = mt.meeting_id "
            f"WHERE mt.status = 'scheduled' AND mt.starts_at <= now() AND {scope.scoped('mt')} "
            "GROUP BY mt.meeting_id, mt.title, mt.starts_at ORDER BY mt.starts_at DESC, mt.meeting_id LIMIT :limit"
        ), {"limit": limit, **scope.params()})).all()
        meetings = [{"meeting_id": r.meeting_id, "title": r.title, "starts_at": r.starts_at.isoformat(),
                     "going": r.going, "attended": r.attended,
                     "rate": round(r.attended / r.going, 3) if r.going else None} for r in rows]
        going, attended = sum(m["going"] for m in meetings), sum(m["attended"] for m in meetings)
        return {"meetings": meetings, "going": going, "attended": attended,
                "rate": round(attended / going, 3) if going else None}

    async def actions(self, session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
        """Actions per ask by people in scope: every ask of the campaigns they took part in or the scope runs."""
        counts = (await session.execute(text(
            PLACED_ACTIONS + "SELECT p.ask_id, count(*) AS n, count(*) FILTER (WHERE p.join_network) AS joined "
            f"FROM placed p WHERE {scope.actions('p')} GROUP BY p.ask_id"
        ), scope.params())).all()
        by_ask = {r.ask_id: (r.n, r.joined) for r in counts}
        asks = (await session.execute(text(
            "SELECT k.ask_id, k.kind, k.title, k.campaign_id, c.title AS campaign, "
            f"({scope.scoped('c')}) AS own FROM rpt_asks k LEFT JOIN rpt_campaigns c ON c.campaign_id = k.campaign_id"
        ), scope.params())).all()
        active = {a.campaign_id for a in asks if a.ask_id in by_ask}  # campaigns people in scope took part in
        out = [
            {"campaign_id": a.campaign_id, "campaign": a.campaign or a.campaign_id, "ask_id": a.ask_id,
             "ask": a.title, "kind": a.kind, "kind_label": ASK_KIND_LABELS.get(a.kind, a.kind),
             "actions": by_ask.get(a.ask_id, (0, 0))[0], "joined_network": by_ask.get(a.ask_id, (0, 0))[1]}
            for a in asks if a.campaign_id in active or (a.own and a.campaign is not None)
        ]
        return sorted(out, key=lambda r: (r["campaign"], r["campaign_id"], r["ask"], r["ask_id"]))

    async def partners(self, session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
        """Partner organisations: campaigns they are in (of those touching the scope), actions on those, members."""
        rows = (await session.execute(text(
            PLACED_ACTIONS + ", scoped AS (SELECT p.campaign_id, count(*) AS n FROM placed p "
            f"WHERE {scope.actions('p')} GROUP BY p.campaign_id) "
            "SELECT pid AS partner_id, count(DISTINCT c.campaign_id) AS campaigns, "
            "coalesce(sum(s.n), 0) AS actions FROM rpt_campaigns c CROSS JOIN LATERAL unnest(c.partner_ids) AS pid "
            f"LEFT JOIN scoped s ON s.campaign_id = c.campaign_id WHERE ({scope.scoped('c')}) OR s.n IS NOT NULL "
            "GROUP BY pid"
        ), scope.params())).all()
        members: dict[str, int] = dict((await session.execute(text(
            "SELECT m.organisation_id, count(*) FROM rpt_members m WHERE m.organisation_id IS NOT NULL "
            f"AND m.status = 'active' AND {scope.members('m')} GROUP BY 1"
        ), scope.params())).all())
        names = await self.names(session)
        ids = {r.partner_id for r in rows} | set(members)
        found = {r.partner_id: r for r in rows}
        out = [{"partner_id": pid, "name": names.get(pid, pid),
                "campaigns": found[pid].campaigns if pid in found else 0,
                "actions": int(found[pid].actions) if pid in found else 0, "members": members.get(pid, 0)}
               for pid in ids]
        return sorted(out, key=lambda r: (-r["campaigns"], -r["members"], r["name"], r["partner_id"]))

    async def headline(self, session: AsyncSession, scope: Scope) -> dict[str, Any]:
        """Members now, those of them who joined in the last 30 days (never more than the members: someone who
        joined and left is neither), and actions by people in scope."""
        row = (await session.execute(text(
            "SELECT count(*) FILTER (WHERE m.status = 'active') AS members, "
            "count(*) FILTER (WHERE m.status = 'active' AND m.joined_at >= now() - interval '30 days') AS joined_30d "
            f"FROM rpt_members m WHERE {scope.members('m')}"
        ), scope.params())).one()
        actions = (await session.execute(text(
            PLACED_ACTIONS + f"SELECT count(*) FROM placed p WHERE {scope.actions('p')}"), scope.params())).scalar_one()
        return {"members": row.members, "joined_30d": row.joined_30d, "actions": actions}

    async def snapshot(self, session: AsyncSession, scope: Scope, *, weeks: int = 12) -> dict[str, Any]:
        """Every figure for one scope: what the dashboard shows and the CSV export writes."""
        return {
            "scope": {"type": scope.scope_type, "id": scope.scope_id},
            "headline": await self.headline(session, scope),
            "growth": await self.growth(session, scope, weeks=weeks),
            "funnel": await self.funnel(session, scope),
            "attendance": await self.attendance(session, scope),
            "actions": await self.actions(session, scope),
            "partners": await self.partners(session, scope),
        }
