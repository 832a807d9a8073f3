"""Organisers' digests: at each organiser's chosen period, a digest of their network, region or group, composed
from the activity log (activity.py), emailed, announced (DigestPublished) and kept for their private Atom feed
(feeds.py); and the loop that builds the digests that are due.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications import queries
from services.notifications.digest_schedule import DEFAULT_PERIOD, NETWORK_TZ, PERIOD_LENGTH, next_digest_time
from services.notifications.domain import first_name_of
from services.notifications.organisers import Organisers
from services.notifications.queries import MAX_UPCOMING, NO_RSVPS, Scope, ScopeKey, WindowSummary
from services.notifications.service import NotificationService
from services.notifications.wording import EmailSettings, fill, format_day, format_when, level_label, unit_summary
from shared.events.catalog import DigestPublished
from shared.events.envelope import Envelope
from shared.logging import get_logger
from shared.uow import UnitOfWork

log = get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class DigestPass:
    """What the digests built in one pass (send-digests, a minute of the background loop) share.

    The digests of a pass over the same window (a Monday's weekly ones, say: same start, same end) read that
    window's activity once, for every scope at once, through the (kind, occurred_at) index, instead of a few
    queries each; the upcoming meetings and their RSVPs are read once per end. Each digest then takes its
    scope's part (Scope.key), in the order its own queries gave. A pass lasts one run of send-digests or of the
    loop: an event recorded late, after its window was read, is missed by the pass's later digests as it is by
    digests already built (the next window starts at this end)."""

    def __init__(self) -> None:
        self._windows: dict[tuple[datetime, datetime], WindowSummary] = {}
        self._upcoming: dict[datetime, tuple[list[tuple[str, dict[str, Any]]], dict[ScopeKey, list[int]]]] = {}
        self._rsvps: dict[tuple[datetime, datetime], dict[str, dict[str, int]]] = {}

    async def window(self, session: AsyncSession, start: datetime, end: datetime) -> WindowSummary:
        summary = self._windows.get((start, end))
        if summary is None:
            summary = self._windows[(start, end)] = await queries.read_window(session, start, end)
        return summary

    async def upcoming_meetings(
        self, session: AsyncSession, scope: Scope, now: datetime, *, window_start: datetime
    ) -> list[dict[str, Any]]:
        """queries.upcoming_meetings(scope, now, window_start=...) with the default limit, and when each is: the
        meetings of the whole network are read once a pass (they do not depend on the window), each digest takes
        its scope's."""
        if now not in self._upcoming:
            self._upcoming[now] = await queries.read_upcoming(session, now)
        meetings, by_scope = self._upcoming[now]
        chosen = [meetings[i] for i in by_scope.get(scope.key, [])[:MAX_UPCOMING]]
        if (now, window_start) not in self._rsvps:
            ids = [meeting_id for meeting_id, _ in meetings]
            self._rsvps[(now, window_start)] = await queries.rsvp_counts(session, ids, window_start)
        counts = self._rsvps[(now, window_start)]
        result = []
        for meeting_id, detail in chosen:
            m = {"meeting_id": meeting_id, **detail}
            m.update(counts.get(meeting_id, NO_RSVPS))
            m["when"] = format_when(m["starts_at"], m.get("timezone") or "Europe/London")
            result.append(m)
        return result


class Digests:
    """Use cases of organisers' digests: composing, building and sending them."""

    def __init__(self, notifications: NotificationService, organisers: Organisers) -> None:
        self.notifications = notifications
        self.organisers = organisers
        self.uows = notifications.uows
        self.settings = notifications.settings
        self.email_settings: EmailSettings = notifications.wording

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
            subteam = await queries.unit(session, scope.scope_id)
            scope = Scope("group", subteam.parent_id if subteam and subteam.parent_id else scope.scope_id)
        digest_pass = digest_pass or DigestPass()
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

    async def _elsewhere(self, session: AsyncSession, scope: Scope, window: WindowSummary) -> dict[str, Any]:
        """What other groups are working on: a group's sibling groups in its region, a region's groups, or (for
        the whole network) each region. Never anything outside the organiser's region."""
        if scope.scope_type == "group":
            me = await queries.unit(session, scope.scope_id)
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
        unit = await queries.unit(session, scope_id)
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
        uow: UnitOfWork,
        subscription: Any,
        end: datetime,
        *,
        period: str | None = None,
        digest_pass: DigestPass | None = None,
    ) -> str | None:
        """Build, store, email and announce one digest of `subscription` up to `end`; None when there was
        nothing to say (no digest is kept, the organiser gets no email). `digest_pass`: what the digests of the
        same pass share (see DigestPass)."""
        session = uow.session
        organiser = await self.organisers.organiser(session, subscription.organiser_id)
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
                uow,
                kind="digest",
                subject_ref=digest_id,
                recipient_id=organiser.organiser_id,
                recipient_email=organiser.email,
                subject=title,
                body_text=body_text,
                body_html=body_html,
                correlation_id=f"digest-{digest_id}",
            )
        published = DigestPublished(
            digest_id=digest_id,
            organiser_id=organiser.organiser_id,
            period=period,  # type: ignore[arg-type]
            scope_type=subscription.scope_type,
            scope_id=subscription.scope_id or None,
            entries=entries,
        )
        # A digest is its own story, not part of whatever started this pass: it carries its own correlation id.
        await uow.publish(Envelope.wrap(published, correlation_id=f"digest-{digest_id}"))
        return digest_id

    async def run_due(self, now: datetime | None = None) -> int:
        """Build every digest whose time has come; each in its own transaction, locked so instances share."""
        now = now or _now()
        built = 0
        s = tables.digest_subscriptions
        digest_pass = DigestPass()
        while True:
            async with self.uows.begin() as uow:
                session = uow.session
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
                organiser = await self.organisers.organiser(session, sub.organiser_id)
                period = organiser.digest_period if organiser else DEFAULT_PERIOD
                try:
                    async with session.begin_nested():
                        if await self.build(uow, sub, now, digest_pass=digest_pass):
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
        async with self.uows.begin() as uow:
            query = select(s.c.id).order_by(s.c.id)
            if organiser_id:
                query = query.where(s.c.organiser_id == organiser_id)
            ids = (await uow.session.execute(query)).scalars().all()
        built = 0
        digest_pass = DigestPass()
        for sub_id in ids:
            async with self.uows.begin() as uow:
                session = uow.session
                sub = (
                    await session.execute(select(s).where(s.c.id == sub_id).with_for_update(skip_locked=True))
                ).first()
                if sub is None:
                    continue
                if await self.build(uow, sub, now, digest_pass=digest_pass):
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

