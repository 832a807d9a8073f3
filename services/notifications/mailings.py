"""Mailings organisers write: drafts, the audience and its live count (consent and suppressions applied),
a preview as one member, a test to the writer, sending now or at a time, and the report.

Sending is the announcements' way (fanout.py): a background loop starts a due mailing and queues it in batches
after a cursor (a member id), one transaction a batch; one delivery per member, unique on (kind 'mailing', the
mailing, the member), so a crash or a restart resumes and never queues anyone twice. Each batch renders the email
once (its Markdown and template, a stencil) and fills in each member's first name and footer links. The delivery
worker sends them, throttled to the relay, at bulk priority, with List-Unsubscribe (a 'mailing' is a marketing
kind).

Web links go through `/notifications/r/<token>` (a signed link id): clicks are counted per link, never per person.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import (
    ColumnElement,
    Text,
    and_,
    bindparam,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import db as tables
from services.notifications import queries
from services.notifications.audience_index import AudienceIndex
from services.notifications.domain import MailingAudience, first_name_of, mailing_is_due
from services.notifications.fanout import run_passes
from services.notifications.markdown_email import links_in, render_markdown
from services.notifications.rendering import Stencil, hole
from services.notifications.service import NotificationService
from services.notifications.wording import one_line
from shared import tokens
from shared.auth import OrganiserScope
from shared.logging import get_logger
from shared.uow import UnitOfWork
from shared.web import page_count

log = get_logger(__name__)
KIND = "mailing"
TEST_KIND = "mailing_test"
LINK_PURPOSE = "mailing-link"
LINK_MAX_AGE_S = 5 * 365 * 24 * 3600
STENCIL_SLOTS = ("first_name", "preferences_url", "unsubscribe_url")
PEOPLE_PER_PAGE = 100  # the report's "Who it went to", a page at a time
YIELD_EVERY = 50  # members rendered between two turns of the event loop (`step`)


def _now() -> datetime:
    return datetime.now(UTC)


def _qualified(predicate: str) -> str:
    """A predicate of db.py's columns ("a AND NOT b") with each column named as recipients'."""
    return " AND ".join(
        f"NOT recipients.{c.strip()[4:]}" if c.strip().startswith("NOT ") else f"recipients.{c.strip()}"
        for c in predicate.split(" AND ")
    )


# Written out, not bound: PostgreSQL uses a partial index only when the query states its predicate literally.
AUDIENCE = text(_qualified(tables.AUDIENCE))
# A count or a batch of members is planned for its own values: a plan cached for any values (after five runs
# of one prepared statement) guesses how many people an interest or a unit holds, and once read the whole table
# through the GIN index for a region's count where reading its index alone takes a fraction of the time.
CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")


def _terms(kind: str, values: list[str] | tuple[str, ...]) -> ColumnElement[Any]:
    """ARRAY[hashtextextended('<kind>:<value>', 0), ...]: values as recipients.audience_terms holds them."""
    return pg_array([func.hashtextextended(literal(f"{kind}:{v}", Text), literal_column("0")) for v in values])


def _has_all(kind: str, values: list[str]) -> ColumnElement[bool]:
    return tables.recipients.c.audience_terms.op("@>", is_comparison=True)(_terms(kind, values))


def _has_any(kind: str, values: list[str] | tuple[str, ...]) -> ColumnElement[bool]:
    return tables.recipients.c.audience_terms.op("&&", is_comparison=True)(_terms(kind, values))


def audience_conditions(
    scope_type: str, scope_id: str | None, audience: MailingAudience, now: datetime | None = None
) -> list[Any]:
    """The mirror's members a mailing written in (scope_type, scope_id) for `audience` reaches: confirmed, with an
    address, who said yes to email and are not on the suppression list (any reason stops a mailing): db.AUDIENCE,
    the audience indexes' predicate; and chosen by the audience. Places, levels and interests are tests on the
    member's audience terms (a region, group or sub-team alike: 'unit:<id>'), activity on `took_part_at`. One WHERE
    clause over columns one index holds: the count is one SQL count, an index-only scan. The days are counted back
    from `now` (by default, now)."""
    r = tables.recipients
    now = now or _now()
    conditions: list[Any] = [AUDIENCE]
    if scope_type != "network":
        conditions.append(_has_all("unit", [scope_id]) if scope_id else false())
    if audience.unit_ids:
        conditions.append(_has_any("unit", audience.unit_ids))
    if audience.interests:
        conditions.append(_has_any("interest", audience.interests))
    if audience.levels:
        conditions.append(_has_any("level", audience.levels))
    if audience.joined_within_days:
        conditions.append(r.c.joined_at >= now - timedelta(days=audience.joined_within_days))
    for unit in audience.exclude_unit_ids:
        conditions.append(not_(_has_all("unit", [unit])))
    if audience.took_part_within_days:
        conditions.append(r.c.took_part_at >= now - timedelta(days=audience.took_part_within_days))
    if audience.quiet_for_days:
        since = now - timedelta(days=audience.quiet_for_days)
        conditions.append(or_(r.c.took_part_at.is_(None), r.c.took_part_at < since))
    return conditions


def _in_unit(unit_id: str) -> ColumnElement[bool]:
    """The member is in the region, group or sub-team `unit_id`, read from the columns themselves."""
    r = tables.recipients
    return or_(r.c.region_id == unit_id, r.c.group_ids.any(unit_id), r.c.subteam_ids.any(unit_id))


def exact_conditions(scope_type: str, scope_id: str | None, audience: MailingAudience) -> list[Any]:
    """The audience's places, levels and interests tested on the columns themselves, beside `audience_conditions`'s
    tests of their 64-bit hashes, for those a mailing is sent to: two terms whose hashes collide (about 3 in 10^10
    for 100,000 of them) could add one term's people to the other's count, never to whom the email goes."""
    r = tables.recipients
    conditions: list[Any] = []
    if scope_type != "network" and scope_id:
        conditions.append(_in_unit(scope_id))
    if audience.unit_ids:
        conditions.append(or_(*(_in_unit(u) for u in audience.unit_ids)))
    if audience.interests:
        conditions.append(r.c.interests.op("&&", is_comparison=True)(literal(list(audience.interests),
                                                                             type_=PG_ARRAY(Text))))
    if audience.levels:
        conditions.append(r.c.engagement_level.in_(audience.levels))
    for unit in audience.exclude_unit_ids:
        conditions.append(not_(_in_unit(unit)))
    return conditions


async def count_audience(
    session: AsyncSession,
    scope_type: str,
    scope_id: str | None,
    audience: MailingAudience,
    now: datetime | None = None,
) -> int:
    """How many people a mailing for `audience` written in the scope reaches now (or at `now`): one SQL count.
    What the audience index (audience_index.py) answers from memory, and the count while it cannot."""
    r = tables.recipients
    conditions = audience_conditions(scope_type, scope_id, audience, now)
    stmt = select(func.count()).select_from(r).where(and_(*conditions))
    await session.execute(CUSTOM_PLANS)
    return int((await session.execute(stmt)).scalar_one())


_FILL_KEY = (
    update(tables.recipients)
    .where(tables.recipients.c.member_id == bindparam("mid"))
    .values(address_key=bindparam("key"))
    .execution_options(synchronize_session=False)
)


class Mailings:
    """The use cases of organisers' mailings."""

    def __init__(self, service: NotificationService) -> None:
        self.service = service
        self.uows = service.uows
        self.settings = service.settings
        self.wake = asyncio.Event()
        # Each instance's own, loaded by `audience_index.run` (a background task of the service's app); a Mailings
        # made without it (the command line) counts in SQL.
        self.audience_index = AudienceIndex(lambda: self.uows.db.sessions())

    # the audience ------------------------------------------------------------------------------------------
    async def units_for(self, session: AsyncSession, who: OrganiserScope) -> list[Any]:
        """The regions, groups and sub-teams `who` may write to, by name (theirs and those under it)."""
        u = tables.units
        rows = list((await session.execute(select(u).order_by(u.c.kind, u.c.name))).all())
        if who.is_network:
            return rows
        parents = {row.unit_id: row.parent_id for row in rows}

        def under(unit_id: str | None) -> bool:
            seen = 0
            while unit_id is not None and seen < 10:
                if unit_id == who.scope_id:
                    return True
                unit_id, seen = parents.get(unit_id), seen + 1
            return False

        return [row for row in rows if under(row.unit_id)]

    async def choices(self, session: AsyncSession) -> tuple[list[str], list[str]]:
        """The interests and engagement levels members have, to choose from."""
        r = tables.recipients
        interests = (await session.execute(select(func.unnest(r.c.interests)).distinct())).scalars().all()
        levels = (
            (await session.execute(select(r.c.engagement_level).where(r.c.engagement_level.is_not(None)).distinct()))
            .scalars()
            .all()
        )
        return sorted(interests), sorted(levels)

    async def _members(
        self,
        session: AsyncSession,
        scope_type: str,
        scope_id: str | None,
        audience: MailingAudience,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Members of the audience (by id, after `cursor`). The SQL leaves out the suppressed (`suppressed`, kept
        from `address_key` by the database); the keyed hashes are checked here again for a row whose key is not
        filled in yet (`fill_address_keys`)."""
        r = tables.recipients
        conditions = audience_conditions(scope_type, scope_id, audience) + exact_conditions(
            scope_type, scope_id, audience
        )
        if cursor:
            conditions.append(r.c.member_id > cursor)
        stmt = (
            select(r.c.member_id, r.c.email, r.c.name, r.c.address_key)
            .where(and_(*conditions))
            .order_by(r.c.member_id)
        )
        if limit:
            stmt = stmt.limit(limit)
        await session.execute(CUSTOM_PLANS)
        batch = [dict(row) for row in (await session.execute(stmt)).mappings()]
        keys = {
            m["member_id"]: m.pop("address_key") or self.service.suppressions.address_key(m["email"]) for m in batch
        }
        suppressed = await queries.suppressed_among(session, list(keys.values()))
        for m in batch:
            m["suppressed"] = keys[m["member_id"]] in suppressed
        return batch

    async def count(self, session: AsyncSession, who: OrganiserScope, audience: MailingAudience) -> int:
        """How many people the audience reaches now, consent and suppressions applied: from the audience index
        (every change committed before the count applied first), or in one SQL count while it cannot answer."""
        now = _now()
        counted = await self.audience_index.count(session, who.scope_type, who.scope_id, audience, now)
        if counted is None:
            counted = await count_audience(session, who.scope_type, who.scope_id, audience, now)
        return counted

    async def sample(self, session: AsyncSession, who: OrganiserScope, audience: MailingAudience) -> list[Any]:
        """Up to 200 members of the audience by name, for choosing whom to preview the email as."""
        r = tables.recipients
        conditions = audience_conditions(who.scope_type, who.scope_id, audience) + exact_conditions(
            who.scope_type, who.scope_id, audience
        )
        stmt = (
            select(r.c.member_id, r.c.email, r.c.name)
            .where(and_(*conditions))
            .order_by(func.lower(func.coalesce(r.c.name, "")), r.c.member_id)
            .limit(200)
        )
        await session.execute(CUSTOM_PLANS)
        return [dict(row) for row in (await session.execute(stmt)).mappings()]

    async def fill_address_keys(self, batch_size: int = 1000) -> int:
        """Give every mirrored address its `address_key` (rows from before it existed); how many were filled."""
        r = tables.recipients
        filled = 0
        while True:
            async with self.uows.begin() as uow:
                rows = (
                    await uow.session.execute(
                        select(r.c.member_id, r.c.email)
                        .where(r.c.address_key.is_(None), r.c.email.is_not(None))
                        .limit(batch_size)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                if rows:
                    keys = [
                        {"mid": row.member_id, "key": self.service.suppressions.address_key(row.email)} for row in rows
                    ]
                    await uow.session.execute(_FILL_KEY, keys)
            filled += len(rows)
            if len(rows) < batch_size:
                return filled

    # drafts ------------------------------------------------------------------------------------------------
    async def save(
        self,
        uow: UnitOfWork,
        who: OrganiserScope,
        mailing_id: str | None,
        subject: str,
        body: str,
        audience: MailingAudience,
    ) -> str:
        m = tables.mailings
        values = {"subject": subject.strip(), "body": body, "audience": audience.as_json(), "updated_at": _now()}
        if mailing_id is None:
            mailing_id = str(uuid.uuid4())
            await uow.session.execute(
                m.insert().values(
                    id=mailing_id,
                    organiser_id=who.organiser_id,
                    scope_type=who.scope_type,
                    scope_id=who.scope_id,
                    **values,
                )
            )
        else:
            await uow.session.execute(update(m).where(m.c.id == mailing_id, m.c.status == "draft").values(**values))
        return mailing_id

    async def get(self, session: AsyncSession, who: OrganiserScope, mailing_id: str) -> Any:
        """The mailing if `who` may see it (written in their scope or one under it), else None."""
        m = tables.mailings
        row = (await session.execute(select(m).where(m.c.id == mailing_id))).first()
        return row if row is not None and await self.covers(session, who, row.scope_type, row.scope_id) else None

    async def covers(self, session: AsyncSession, who: OrganiserScope, scope_type: str, scope_id: str | None) -> bool:
        """Whether `who` may see what was written in (scope_type, scope_id): their own scope or one under it."""
        if who.is_network or (scope_type, scope_id) == (who.scope_type, who.scope_id):
            return True
        return bool(scope_id) and any(u.unit_id == scope_id for u in await self.units_for(session, who))

    async def scopes_under(self, session: AsyncSession, who: OrganiserScope) -> list[str] | None:
        """The scope ids whose mailings and audiences `who` sees (None: all of them, a network organiser)."""
        if who.is_network:
            return None
        return [s for s in (who.scope_id, *(u.unit_id for u in await self.units_for(session, who))) if s]

    async def page_for(
        self, session: AsyncSession, who: OrganiserScope, limit: int, offset: int
    ) -> tuple[list[Any], int]:
        """A page of the mailings `who` may see, newest first, and how many there are (the OSDI collection)."""
        m = tables.mailings
        scopes = await self.scopes_under(session, who)
        where = [] if scopes is None else [m.c.scope_id.in_(scopes)]
        total = (await session.execute(select(func.count()).select_from(m).where(*where))).scalar_one()
        stmt = select(m).where(*where).order_by(m.c.created_at.desc(), m.c.id).limit(limit).offset(offset)
        return list((await session.execute(stmt)).all()), int(total)

    async def statistics(self, session: AsyncSession, mailings: list[Any]) -> dict[str, dict[str, int]]:
        """Per mailing, in aggregate: emails sent, bounced, clicks on its links, and people who unsubscribed
        since it started going out (by the address it went to)."""
        ids = [mailing.id for mailing in mailings]
        if not ids:
            return {}
        d, ml, r, s, m = (
            tables.deliveries,
            tables.mailing_links,
            tables.recipients,
            tables.suppressions,
            tables.mailings,
        )
        found: dict[str, dict[str, int]] = {i: {} for i in ids}
        by_status = await session.execute(
            select(d.c.subject_ref, d.c.status, func.count())
            .where(d.c.kind == KIND, d.c.subject_ref.in_(ids), d.c.status.in_(("sent", "bounced")))
            .group_by(d.c.subject_ref, d.c.status)
        )
        for mailing_id, status, n in by_status:
            found[mailing_id][status] = n
        clicks = await session.execute(
            select(ml.c.mailing_id, func.sum(ml.c.clicks)).where(ml.c.mailing_id.in_(ids)).group_by(ml.c.mailing_id)
        )
        for mailing_id, n in clicks:
            found[mailing_id]["clicked"] = int(n or 0)
        unsubscribed = await session.execute(
            select(d.c.subject_ref, func.count())
            .select_from(d.join(m, m.c.id == d.c.subject_ref).join(r, r.c.member_id == d.c.recipient_id))
            .join(s, s.c.email == r.c.address_key)
            .where(
                d.c.kind == KIND,
                d.c.subject_ref.in_(ids),
                d.c.status != "pending",
                s.c.reason == "unsubscribed",
                s.c.created_at >= m.c.started_at,
            )
            .group_by(d.c.subject_ref)
        )
        for mailing_id, n in unsubscribed:
            found[mailing_id]["unsubscribed"] = n
        return found

    async def schedule(self, uow: UnitOfWork, mailing_id: str, send_at: datetime | None) -> bool:
        """Send the draft now (None) or at `send_at`; False when it is not a draft any more."""
        m = tables.mailings
        result = await uow.session.execute(
            update(m)
            .where(m.c.id == mailing_id, m.c.status == "draft")
            .values(status="scheduled", send_at=send_at or _now(), updated_at=_now())
            .returning(m.c.id)
        )
        uow.on_commit(self.wake.set)
        return result.first() is not None

    async def unschedule(self, uow: UnitOfWork, mailing_id: str) -> bool:
        m = tables.mailings
        result = await uow.session.execute(
            update(m)
            .where(m.c.id == mailing_id, m.c.status == "scheduled")
            .values(status="draft", send_at=None)
            .returning(m.c.id)
        )
        return result.first() is not None

    # the email ---------------------------------------------------------------------------------------------
    def link_url(self, link_id: str) -> str:
        token = tokens.sign(self.settings.secret_key, LINK_PURPOSE, {"l": link_id})
        return f"{self.settings.public_base_url}/notifications/r/{token}"

    async def _links(self, session: AsyncSession, mailing: Any) -> dict[str, str]:
        """Each web link of the mailing with its click-counting address (its link rows made once)."""
        links = links_in(mailing.body)
        ml = tables.mailing_links
        if links:
            await session.execute(
                pg_insert(ml)
                .values([{"id": str(uuid.uuid4()), "mailing_id": mailing.id, "url": url} for url in links])
                .on_conflict_do_nothing(constraint="uq_mailing_links_url")
            )
        rows = (await session.execute(select(ml.c.id, ml.c.url).where(ml.c.mailing_id == mailing.id))).all()
        return {row.url: self.link_url(row.id) for row in rows}

    def render(
        self, mailing: Any, wording: dict[str, str], member_id: str, name: str | None, links: dict[str, str] | None
    ) -> tuple[str, str]:
        """The email to one member: the organiser's words (their {first_name}), the network's footer."""
        text, html = self._body(mailing, links)
        first = first_name_of(name)
        return self.service.renderer.render(
            "mailing",
            wording=wording,
            body_text=text.replace("{first_name}", first),
            body_html=Markup(html.replace("{first_name}", str(escape(first)))),
            **self.service.footer(member_id),
        )

    @staticmethod
    def _body(mailing: Any, links: dict[str, str] | None) -> tuple[str, str]:
        """The organiser's Markdown as text and HTML, web links through their click-counting addresses."""
        return render_markdown(mailing.body, (lambda url: links.get(url, url)) if links is not None else None)

    def stencil(self, mailing: Any, wording: dict[str, str], links: dict[str, str]) -> Stencil:
        """The email rendered once for a batch (the Markdown and the template), the member's first name and
        footer links left as holes: each member's email is then string joins, as an announcement's is."""
        text, html = self._body(mailing, links)
        first = hole("first_name")
        return self.service.renderer.stencil(
            "mailing",
            STENCIL_SLOTS,
            wording=wording,
            body_text=text.replace("{first_name}", first),
            body_html=Markup(html.replace("{first_name}", first)),
        )

    async def preview(self, session: AsyncSession, who: OrganiserScope, mailing: Any, member_id: str | None) -> Any:
        """The email as `member_id` (one of the audience) would get it; the first of them when None."""
        audience = MailingAudience.from_json(mailing.audience)
        members = await self.sample(session, who, audience)
        member = next((m for m in members if m["member_id"] == member_id), members[0] if members else None)
        wording = await self.service.wording.current(session)
        text, html = self.render(
            mailing, wording, member["member_id"] if member else "preview", member["name"] if member else None, None
        )
        return {"subject": mailing.subject, "text": text, "html": html, "member": member}

    async def send_test(self, uow: UnitOfWork, who: OrganiserScope, mailing: Any) -> bool:
        """The email to the organiser's own address (never anyone else's); False when it is not known here yet."""
        o = tables.organisers
        me = (await uow.session.execute(select(o).where(o.c.organiser_id == who.organiser_id))).first()
        if me is None or not me.email:
            return False
        wording = await self.service.wording.current(uow.session)
        text, html = self.render(mailing, wording, me.member_id or who.organiser_id, me.name, None)
        await self.service.queue(
            uow,
            kind=TEST_KIND,
            subject_ref=str(uuid.uuid4()),
            recipient_id=who.organiser_id,
            recipient_email=me.email,
            subject=f"[Test] {mailing.subject}",
            body_text=text,
            body_html=html,
        )
        return True

    # sending -----------------------------------------------------------------------------------------------
    async def step(self, batch_size: int = 500) -> bool:
        """Queue one batch of one due mailing; False when none is due."""
        m = tables.mailings
        async with self.uows.begin() as uow:
            session = uow.session
            job = (
                await session.execute(
                    select(m)
                    .where(m.c.status.in_(("scheduled", "sending")), m.c.send_at <= _now())
                    .order_by(m.c.send_at)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if job is None or not mailing_is_due(job.status, job.send_at, _now()):
                return False
            audience = MailingAudience.from_json(job.audience)
            batch = await self._members(session, job.scope_type, job.scope_id, audience, job.cursor, batch_size)
            wording = await self.service.wording.current(session)
            links = await self._links(session, job)
            stencil: Stencil | None = self.stencil(job, wording, links)
            emails: list[tuple[str, str, str, str]] = []
            for i, member in enumerate(batch):
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    # Rendering a batch is a few hundred milliseconds of CPU: the senders, on the same event loop,
                    # get their relay's and database's replies in between instead of after it.
                    await asyncio.sleep(0)
                if member["suppressed"]:
                    continue
                if stencil is not None:
                    values = {"first_name": first_name_of(member["name"]), **self.service.footer(member["member_id"])}
                    text, html = stencil.fill(**values)
                    if not emails and (text, html) != self.render(
                        job, wording, member["member_id"], member["name"], links
                    ):
                        log.warning("mailing template does not fill in as a stencil; rendering each email")
                        stencil = None
                if stencil is None:
                    text, html = self.render(job, wording, member["member_id"], member["name"], links)
                emails.append((member["member_id"], member["email"], text, html))
            if emails:
                await queries.queue_batch(
                    session, kind=KIND, subject_ref=job.id, subject=one_line(job.subject), correlation_id=None,
                    emails=emails,
                )
                uow.on_commit(self.service.deliveries_queued.set)
            done = len(batch) < batch_size
            await session.execute(
                update(m)
                .where(m.c.id == job.id)
                .values(
                    status="sent" if done else "sending",
                    cursor=batch[-1]["member_id"] if batch else job.cursor,
                    queued=m.c.queued + len(emails),
                    started_at=func.coalesce(m.c.started_at, _now()),
                    finished_at=_now() if done else None,
                )
            )
        return True

    async def run(self, poll_interval_s: float = 1.0) -> None:
        """Start due mailings within a second or so of their time, and queue them to the end (once every mirrored
        address has its suppression key, so counts and sends agree)."""
        try:
            await self.fill_address_keys()
        except Exception as exc:  # the count falls back to the send-time check; the sending itself goes on
            log.warning("filling address keys failed", error=repr(exc))
        await run_passes(self.step, self.wake, poll_interval_s, "mailing")

    # clicks and the report ---------------------------------------------------------------------------------
    async def click(self, token: str) -> str | None:
        """Count a click on a mailing's link and return where it goes; None for a token that is not one."""
        try:
            payload = tokens.verify(self.settings.secret_key, LINK_PURPOSE, token, LINK_MAX_AGE_S)
            link_id = str(payload["l"])
        except Exception:
            return None
        ml = tables.mailing_links
        async with self.uows.begin() as uow:
            url = (
                await uow.session.execute(
                    update(ml).where(ml.c.id == link_id).values(clicks=ml.c.clicks + 1).returning(ml.c.url)
                )
            ).scalar()
        return url if url and url.lower().startswith(("http://", "https://")) else None

    async def report(self, session: AsyncSession, mailing: Any, page: int = 1) -> dict[str, Any]:
        """Queued, sent, failed, bounced, suppressed; unsubscribed since it was sent; clicks per link; who got it,
        a page of `PEOPLE_PER_PAGE` at a time by name (those who have since left or were erased are not named)."""
        d = tables.deliveries
        rows = (
            await session.execute(
                select(d.c.status, func.count())
                .where(d.c.kind == KIND, d.c.subject_ref == mailing.id)
                .group_by(d.c.status)
            )
        ).all()
        by_status = {status: n for status, n in rows}
        ml = tables.mailing_links
        links = (
            await session.execute(
                select(ml.c.url, ml.c.clicks)
                .where(ml.c.mailing_id == mailing.id)
                .order_by(ml.c.clicks.desc(), ml.c.url)
            )
        ).all()
        r = tables.recipients
        this_mailing = (d.c.kind == KIND, d.c.subject_ref == mailing.id)
        to_named = d.join(r, r.c.member_id == d.c.recipient_id)
        listed = (await session.execute(select(func.count()).select_from(to_named).where(*this_mailing))).scalar_one()
        pages = page_count(listed, PEOPLE_PER_PAGE)
        page = min(max(1, page), pages)
        people = (
            await session.execute(
                select(r.c.name, r.c.email, d.c.status, d.c.sent_at)
                .select_from(to_named)
                .where(*this_mailing)
                .order_by(r.c.name, r.c.member_id)
                .limit(PEOPLE_PER_PAGE)
                .offset((page - 1) * PEOPLE_PER_PAGE)
            )
        ).all()
        unsubscribed = 0
        if mailing.started_at is not None:
            # Everyone it was sent to, whatever page is shown: their address's key is on the recipient's row.
            s = tables.suppressions
            unsubscribed = (
                await session.execute(
                    select(func.count(func.distinct(s.c.email)))
                    .select_from(to_named.join(s, s.c.email == r.c.address_key))
                    .where(
                        *this_mailing,
                        d.c.status != "pending",
                        s.c.reason == "unsubscribed",
                        s.c.created_at >= mailing.started_at,
                    )
                )
            ).scalar_one()
        return {
            "queued": sum(by_status.values()),
            "waiting": by_status.get("pending", 0) + by_status.get("sending", 0),
            "sent": by_status.get("sent", 0),
            "failed": by_status.get("failed", 0),
            "bounced": by_status.get("bounced", 0),
            "suppressed": by_status.get("suppressed", 0),
            "unsubscribed": unsubscribed,
            "links": links,
            "people": people,
            "listed": listed,
            "gone": max(0, sum(by_status.values()) - listed),
            "page": page,
            "pages": pages,
        }
