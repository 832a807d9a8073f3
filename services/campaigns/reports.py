"""Network reporting's figures: what the organisers' dashboard (and its CSV export) shows for one scope, read from
the read model that projection.py writes (`rpt_*`): the member figures from its tallies (tallies.py), one indexed
query each, the others computed when asked. Every statement names tables without
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
from services.campaigns.tallies import TOTAL
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

    def scoped(self, alias: str) -> str:
        """Something with its own scope (a meeting, a campaign) that lies within this one."""
        if self.network:
            return "TRUE"
        below = ("SELECT unit_id FROM rpt_units WHERE parent_id = :sid OR parent_id IN "
                 "(SELECT unit_id FROM rpt_units WHERE parent_id = :sid)")
        return f"({alias}.scope_id = :sid OR {alias}.scope_id IN ({below}))"

    def params(self) -> dict[str, Any]:
        return {} if self.network else {"sid": self.scope_id}

    def tallied(self) -> dict[str, str]:
        """This scope's tallies (tallies.py)."""
        return {"scope_type": "network", "scope_id": ""} if self.network else {
            "scope_type": self.scope_type, "scope_id": self.scope_id or ""}


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
        """Members per place (regions for the network, groups for a region) at the end of each of the last weeks.

        Read from the tallies: per place, the joins and leaves of each week in the window and everything before it
        summed. A place is shown if anyone in scope ever counted there; a member in two groups counts in both
        groups' series, but once in the scope's totals (the `*` place)."""
        today = today or datetime.now(UTC).date()
        starts = [week_start(today) - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]
        rows = (await session.execute(text(
            "SELECT key, CASE WHEN week < :first THEN NULL WHEN week > :last THEN :after ELSE week END AS week, "
            "sum(joins) AS joins, sum(leaves) AS leaves FROM rpt_tallies "
            "WHERE scope_type = :scope_type AND scope_id = :scope_id AND kind = 'place' GROUP BY 1, 2"
        ), {"first": starts[0], "last": starts[-1], "after": starts[-1] + timedelta(days=7),
            **scope.tallied()})).all()
        index = {start: i for i, start in enumerate(starts)}
        counted: dict[str, dict[str, Any]] = {}
        for r in rows:
            place = counted.setdefault(r.key, {"before": 0, "ever": 0, "net": [0] * weeks, "joined": [0] * weeks})
            place["ever"] += r.joins
            if r.week is None:
                place["before"] += r.joins - r.leaves
            elif r.week in index:
                place["net"][index[r.week]] += r.joins - r.leaves
                place["joined"][index[r.week]] += r.joins

        def members(place: dict[str, Any]) -> list[int]:
            out, running = [], place["before"]
            for net in place["net"]:
                running += net
                out.append(int(running))
            return out

        names = await self.names(session)
        by_groups = not scope.network
        none = "No group" if by_groups else "No region"
        series: list[dict[str, Any]] = [
            {"id": key or None, "name": names.get(key, key or none), "members": members(place),
             "joined": [int(n) for n in place["joined"]]}
            for key, place in counted.items() if key != TOTAL and place["ever"] > 0]
        ordered = sorted(series, key=lambda s: (-s["members"][-1], s["name"], s["id"] or ""))
        total = counted.get(TOTAL, {"before": 0, "net": [0] * weeks, "joined": [0] * weeks})
        return {"weeks": [s.isoformat() for s in starts], "place_kind": "group" if by_groups else "region",
                "series": ordered, "totals": {"members": members(total), "joined": [int(n) for n in total["joined"]]}}

    async def _active(self, session: AsyncSession, scope: Scope, kind: str) -> dict[str, int]:
        """Members still members per key of a kind of tally (levels, partners), those with any."""
        return {key: int(n) for key, n in (await session.execute(text(
            "SELECT key, sum(joins - leaves) AS n FROM rpt_tallies WHERE scope_type = :scope_type "
            "AND scope_id = :scope_id AND kind = :kind GROUP BY key HAVING sum(joins - leaves) > 0"
        ), {"kind": kind, **scope.tallied()})).all()}

    async def funnel(self, session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
        """Active members at each level of the ladder or above (everyone is at the first)."""
        base = self.ladder[0].level
        rank = {r.level: i for i, r in enumerate(self.ladder)}
        at = [0] * len(self.ladder)
        for level, n in (await self._active(session, scope, "level")).items():
            at[rank.get(level or base, 0)] += n
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
            "SELECT key AS ask_id, sum(joins) AS n, sum(leaves) AS joined FROM rpt_tallies WHERE kind = 'ask' "
            "AND scope_type = :scope_type AND scope_id = :scope_id GROUP BY key HAVING sum(joins) > 0"
        ), scope.tallied())).all()
        by_ask = {r.ask_id: (int(r.n), int(r.joined)) for r in counts}
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
            "WITH scoped AS (SELECT key AS campaign_id, sum(joins) AS n FROM rpt_tallies WHERE kind = 'campaign' "
            "AND scope_type = :scope_type AND scope_id = :scope_id GROUP BY key HAVING sum(joins) > 0) "
            "SELECT pid AS partner_id, count(DISTINCT c.campaign_id) AS campaigns, "
            "coalesce(sum(s.n), 0) AS actions FROM rpt_campaigns c CROSS JOIN LATERAL unnest(c.partner_ids) AS pid "
            f"LEFT JOIN scoped s ON s.campaign_id = c.campaign_id WHERE ({scope.scoped('c')}) OR s.n IS NOT NULL "
            "GROUP BY pid"
        ), {**scope.params(), **scope.tallied()})).all()
        members = await self._active(session, scope, "partner")
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
        tallied = (await session.execute(text(
            "SELECT coalesce(sum(joins - leaves) FILTER (WHERE kind = 'place'), 0) AS members, "
            "coalesce(sum(joins) FILTER (WHERE kind = 'ask'), 0) AS actions FROM rpt_tallies "
            "WHERE scope_type = :scope_type AND scope_id = :scope_id "
            "AND ((kind = 'place' AND key = :total) OR kind = 'ask')"
        ), {"total": TOTAL, **scope.tallied()})).one()
        joined_30d = (await session.execute(text(
            "SELECT count(*) FROM rpt_members m WHERE m.joined_at >= now() - interval '30 days' "
            f"AND m.status = 'active' AND {scope.members('m')}"), scope.params())).scalar_one()
        return {"members": int(tallied.members), "joined_30d": joined_30d, "actions": int(tallied.actions)}

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
