"""The campaigns service's use cases: each is one transaction that writes state and its outbox rows together.

An action is counted once per person and ask by a unique (ask, person) row: a second signature finds the first
and publishes nothing. A closed campaign is checked under a share lock, so closing waits for actions in flight.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.campaigns import db as tables
from services.campaigns.domain import (
    ActionForm,
    ActionRefused,
    AskPlan,
    Constituency,
    NoConstituency,
    closed_reason,
    parse_mp_csv,
    person_ref,
    postcode_keys,
    render_letter,
    validate_ask,
    validate_campaign,
)
from shared import topics
from shared.auth import OrganiserScope
from shared.crypto import KeyStore, encode_key, seal
from shared.db import Database
from shared.errors import InvalidInput
from shared.events import catalog as ev
from shared.events.envelope import EventData, Sealed
from shared.logging import correlation_id_var, get_logger
from shared.outbox import Outbox

log = get_logger(__name__)
OWNER = "campaigns"
ATTEND_NAMESPACE = uuid.UUID("4f0c62a4-5d1e-4b8e-9a51-6c3f0f6a1d7e")  # action ids of RSVPs: one per ask and RSVP


class CampaignNotFound(LookupError):
    """No campaign with that id."""


class AskNotFound(LookupError):
    """No ask with that id (in that campaign)."""


class ActionNotFound(LookupError):
    """No action with that id."""


class NotYours(PermissionError):
    """The organiser's scope does not cover the campaign."""


@dataclass(frozen=True)
class ActionOutcome:
    action_id: str
    already: bool
    count: int
    constituency: Constituency | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


class CampaignsService:
    def __init__(self, db: Database, outbox: Outbox, *, secret_key: str, public_base_url: str) -> None:
        self.db = db
        self.outbox = outbox
        self.keys = KeyStore(tables.subject_keys, OWNER)
        self.secret_key = secret_key
        self.public_base_url = public_base_url.rstrip("/")

    async def _emit(self, session: AsyncSession, events: Sequence[EventData]) -> None:
        await self.outbox.add_events(session, events, correlation_id=correlation_id_var.get())

    # scoping -------------------------------------------------------------------------------------------
    async def ancestors(self, session: AsyncSession, unit_id: str | None) -> list[str]:
        """The unit's parents, nearest first, from membership's organisation events."""
        u = tables.units
        found: list[str] = []
        current = unit_id
        while current and len(found) < 5:
            current = (await session.execute(select(u.c.parent_id).where(u.c.unit_id == current))).scalar()
            if current:
                found.append(current)
        return found

    async def region_of(self, session: AsyncSession, scope_type: str, scope_id: str | None) -> str | None:
        if scope_type == "network" or scope_id is None:
            return None
        if scope_type == "region":
            return scope_id
        u = tables.units
        for unit in await self.ancestors(session, scope_id):
            kind = (await session.execute(select(u.c.kind).where(u.c.unit_id == unit))).scalar()
            if kind == "region":
                return unit
        return None

    async def _check_scope(self, session: AsyncSession, organiser: OrganiserScope | None, scope_type: str,
                           scope_id: str | None) -> str | None:
        region_id = await self.region_of(session, scope_type, scope_id)
        ancestors = await self.ancestors(session, scope_id)
        if organiser is not None and not organiser.covers(scope_type, scope_id, region_id, ancestors=ancestors):
            raise NotYours(f"You organise {organiser.describe()}; this campaign belongs to the {scope_type} "
                           f"{scope_id or ''}".rstrip())
        return region_id

    async def covers_campaign(self, organiser: OrganiserScope, campaign: Any) -> bool:
        async with self.db.transaction() as session:
            ancestors = await self.ancestors(session, campaign.scope_id)
        return organiser.covers(campaign.scope_type, campaign.scope_id, campaign.region_id, ancestors=ancestors)

    # campaigns and asks --------------------------------------------------------------------------------
    async def launch(self, raw: dict[str, Any], organiser: OrganiserScope | None,
                     asks: Sequence[dict[str, Any]] = ()) -> str:
        """Store a campaign (and any asks given with it) and announce it: CampaignLaunched, then AskPublished."""
        plan = validate_campaign(raw)
        ask_plans = []
        for i, a in enumerate(asks):
            try:
                ask_plans.append(validate_ask(a))
            except InvalidInput as exc:
                raise InvalidInput({f"asks[{i}].{k}": v for k, v in exc.errors.items()}) from None
        campaign_id = str(uuid.uuid4())
        c = tables.campaigns
        async with self.db.transaction() as session:
            region_id = await self._check_scope(session, organiser, plan.scope_type, plan.scope_id)
            await session.execute(
                pg_insert(c).values(
                    id=campaign_id, title=plan.title, summary=plan.summary, goal=plan.goal, issues=plan.issues,
                    scope_type=plan.scope_type, scope_id=plan.scope_id, region_id=region_id,
                    partner_ids=plan.partner_ids, status="live",
                    created_by=organiser.organiser_id if organiser else None, launched_at=utcnow(),
                )
            )
            events: list[EventData] = [
                ev.CampaignLaunched(campaign_id=campaign_id, title=plan.title, scope_type=plan.scope_type,  # type: ignore[arg-type]
                                    scope_id=plan.scope_id, goal=plan.goal, issues=plan.issues,
                                    partner_ids=plan.partner_ids)
            ]
            for ask in ask_plans:
                events.append(await self._insert_ask(session, campaign_id, ask))
            await self._emit(session, events)
        return campaign_id

    async def _insert_ask(self, session: AsyncSession, campaign_id: str, plan: AskPlan) -> ev.AskPublished:
        a = tables.asks
        if plan.kind == "attend":
            known = (await session.execute(
                select(tables.meetings.c.meeting_id).where(tables.meetings.c.meeting_id == plan.meeting_id)
            )).first()
            if known is None:
                raise InvalidInput({"meeting_id": "There is no meeting with that id (a new one takes a moment to "
                                                  "arrive from the events service)"})
        position = (await session.execute(
            select(func.coalesce(func.max(a.c.position), -1) + 1).where(a.c.campaign_id == campaign_id)
        )).scalar_one()
        ask_id = str(uuid.uuid4())
        await session.execute(
            pg_insert(a).values(
                id=ask_id, campaign_id=campaign_id, kind=plan.kind, title=plan.title, description=plan.description,
                body=plan.body, addressee=plan.addressee, goal=plan.goal, letter_subject=plan.letter_subject,
                meeting_id=plan.meeting_id, share_url=plan.share_url, position=position, created_at=utcnow(),
            )
        )
        return ev.AskPublished(campaign_id=campaign_id, ask_id=ask_id, kind=plan.kind, title=plan.title,  # type: ignore[arg-type]
                               target=plan.goal, meeting_id=plan.meeting_id)

    async def _locked_campaign(self, session: AsyncSession, campaign_id: str, *, share: bool = False) -> Row:
        c = tables.campaigns
        query = select(c).where(c.c.id == campaign_id)
        query = query.with_for_update(read=True) if share else query.with_for_update()
        row = (await session.execute(query)).first()
        if row is None:
            raise CampaignNotFound(campaign_id)
        return row

    async def add_ask(self, campaign_id: str, raw: dict[str, Any], organiser: OrganiserScope | None) -> str:
        plan = validate_ask(raw)
        async with self.db.transaction() as session:
            campaign = await self._locked_campaign(session, campaign_id)
            await self._check_scope(session, organiser, campaign.scope_type, campaign.scope_id)
            if campaign.status == "closed":
                raise InvalidInput({"campaign": "This campaign has closed: it takes no new asks"})
            event = await self._insert_ask(session, campaign_id, plan)
            await self._emit(session, [event])
        return event.ask_id

    async def close(self, campaign_id: str, organiser: OrganiserScope | None) -> bool:
        """Close a campaign (idempotent): its asks take no more actions; CampaignClosed."""
        c = tables.campaigns
        async with self.db.transaction() as session:
            campaign = await self._locked_campaign(session, campaign_id)
            await self._check_scope(session, organiser, campaign.scope_type, campaign.scope_id)
            if campaign.status == "closed":
                return False
            now = utcnow()
            await session.execute(update(c).where(c.c.id == campaign_id).values(status="closed", closed_at=now))
            await self._emit(session, [ev.CampaignClosed(campaign_id=campaign_id, closed_at=now)])
        return True

    # actions -------------------------------------------------------------------------------------------
    async def _ask_for_action(self, session: AsyncSession, ask_id: str) -> tuple[Row, Row]:
        a = tables.asks
        ask = (await session.execute(select(a).where(a.c.id == ask_id))).first()
        if ask is None:
            raise AskNotFound(ask_id)
        campaign = await self._locked_campaign(session, ask.campaign_id, share=True)
        reason = closed_reason(campaign_status=campaign.status, ask_status=ask.status)
        if reason:
            raise ActionRefused(reason)
        return ask, campaign

    async def find_constituency(self, session: AsyncSession, postcode: str) -> Constituency | None:
        cp, c = tables.constituency_postcodes, tables.constituencies
        keys = postcode_keys(postcode)
        if not keys:
            return None
        rows = (await session.execute(
            select(cp.c.postcode_key, c).join(c, c.c.code == cp.c.constituency_code).where(cp.c.postcode_key.in_(keys))
        )).all()
        by_key = {r.postcode_key: r for r in rows}
        for key in keys:  # the most precise match wins
            if key in by_key:
                r = by_key[key]
                return Constituency(r.code, r.name, r.mp_name, r.mp_party, r.mp_email)
        return None

    async def constituency_for(self, postcode: str) -> Constituency:
        async with self.db.transaction() as session:
            found = await self.find_constituency(session, postcode)
        if found is None:
            raise NoConstituency({"postcode": _no_constituency_message(postcode)})
        return found

    async def count(self, session: AsyncSession, ask_id: str) -> int:
        x = tables.actions
        return int((await session.execute(select(func.count()).where(x.c.ask_id == ask_id))).scalar_one())

    async def take_action(self, ask_id: str, form: ActionForm, *, source: str = "form") -> ActionOutcome:
        """Record an action once per person and ask and publish ActionTaken (and the letter, for an MP ask).

        Refused with nothing stored: a closed campaign or ask, a postcode with no constituency for an MP letter.
        """
        x = tables.actions
        now = utcnow()
        async with self.db.transaction() as session:
            ask, campaign = await self._ask_for_action(session, ask_id)
            if ask.kind == "attend":
                raise ActionRefused("RSVP on the meeting's own page: it counts here as soon as you have.")
            constituency = None
            if ask.kind == "write_to_mp":
                constituency = await self.find_constituency(session, form.postcode or "")
                if constituency is None:
                    raise NoConstituency({"postcode": _no_constituency_message(form.postcode or "")})
                if not constituency.mp_email:
                    raise NoConstituency({"postcode": f"We have no email address for the MP for {constituency.name} "
                                                      "yet, so we cannot send your letter. Please try again later."})
            ref = None if ask.kind == "share" else person_ref(member_id=form.member_id, email=form.email,
                                                             secret_key=self.secret_key)
            member = await self._member(session, form.member_id)
            action_id = str(uuid.uuid4())
            values = {
                "id": action_id, "ask_id": ask_id, "campaign_id": ask.campaign_id, "kind": ask.kind,
                "person_ref": ref, "member_id": form.member_id, "name": form.name, "email": form.email,
                "postcode": form.postcode, "comment": form.comment, "pledge_text": form.pledge_text,
                "moderation": "pending" if ask.kind == "pledge" else None,
                "constituency_code": constituency.code if constituency else None,
                "mp_name": constituency.mp_name if constituency else None,
                "letter_subject": form.letter_subject, "letter_body": form.letter_body, "channel": form.channel,
                "join_network": form.join_network, "source": source,
                "region_id": member.region_id if member else None,
                "group_id": member.group_ids[0] if member and member.group_ids else None, "created_at": now,
            }
            inserted = (await session.execute(
                pg_insert(x).values(**values).on_conflict_do_nothing(constraint="uq_actions_ask_person")
                .returning(x.c.id)
            )).first()
            if inserted is None:  # this person already took this action: counted once
                existing = (await session.execute(
                    select(x.c.id).where(x.c.ask_id == ask_id, x.c.person_ref == ref)
                )).scalar_one()
                return ActionOutcome(existing, True, await self.count(session, ask_id), constituency)
            await self._emit(session, await self._action_events(session, ask, values, form, constituency, now))
            return ActionOutcome(action_id, False, await self.count(session, ask_id), constituency)

    async def _member(self, session: AsyncSession, member_id: str | None) -> Row | None:
        if not member_id:
            return None
        m = tables.members
        return (await session.execute(select(m).where(m.c.member_id == member_id))).first()

    async def _action_events(self, session: AsyncSession, ask: Row, values: dict[str, Any], form: ActionForm,
                             constituency: Constituency | None, now: datetime) -> list[EventData]:
        """ActionTaken with the person's fields sealed with the action's own key, issued first on its key topic."""
        action_id = values["id"]
        events: list[EventData] = []
        sealed: dict[str, Sealed] = {}
        if form.email or form.name:
            key, created = await self.keys.get_or_create(session, action_id)
            if created:
                events.append(ev.ActionKeyIssued(key_id=action_id, key=encode_key(key)))

            def sealed_value(value: str) -> Sealed:
                return seal(value, key, key_id=action_id, owner=OWNER)

            for name in ("email", "name"):
                if getattr(form, name):
                    sealed[name] = sealed_value(getattr(form, name))
            if form.postcode and (form.join_network or ask.kind == "write_to_mp"):
                sealed["postcode"] = sealed_value(form.postcode)
        events.append(ev.ActionTaken(
            action_id=action_id, ask_id=ask.id, campaign_id=ask.campaign_id, kind=ask.kind,
            member_id=form.member_id, region_id=values["region_id"], group_id=values["group_id"],
            join_network=form.join_network, email_consent=form.email_consent, taken_at=now, **sealed,  # type: ignore[arg-type]
        ))
        if ask.kind == "write_to_mp":
            assert constituency and form.letter_subject and form.letter_body and form.name and form.email
            events.append(ev.MpLetterRequested(
                action_id=action_id, ask_id=ask.id, campaign_id=ask.campaign_id, member_id=form.member_id,
                constituency_code=constituency.code, constituency_name=constituency.name,
                mp_name=constituency.mp_name, mp_email=constituency.mp_email,
                letter_subject=sealed_value(form.letter_subject), letter_body=sealed_value(form.letter_body),
                sender_name=sealed["name"], sender_email=sealed["email"], sender_postcode=sealed["postcode"],
                requested_at=now,
            ))
        return events

    def letter_draft(self, ask: Any, constituency: Constituency, *, name: str, postcode: str) -> str:
        return render_letter(ask.body, mp_name=constituency.mp_name, constituency=constituency.name, name=name,
                             postcode=postcode)

    async def moderate(self, action_id: str, decision: str, organiser: OrganiserScope) -> str:
        """Approve or reject a pledge for public display; returns the new state."""
        if decision not in ("approved", "rejected", "pending"):
            raise InvalidInput({"decision": "Choose approve or reject"})
        x = tables.actions
        async with self.db.transaction() as session:
            row = (await session.execute(select(x).where(x.c.id == action_id).with_for_update())).first()
            if row is None or row.kind != "pledge":
                raise ActionNotFound(action_id)
            campaign = await self._locked_campaign(session, row.campaign_id, share=True)
            await self._check_scope(session, organiser, campaign.scope_type, campaign.scope_id)
            await session.execute(update(x).where(x.c.id == action_id).values(
                moderation=decision, moderated_by=organiser.organiser_id, moderated_at=utcnow()))
        return decision

    # reactions to other services' events ---------------------------------------------------------------
    async def link_joined_member(self, session: AsyncSession, event: ev.MemberJoined) -> None:
        """Membership marks a join that came from an action with source `action:<id>`: the action is theirs now."""
        if event.source.startswith("action:"):
            x = tables.actions
            await session.execute(
                update(x).where(x.c.id == event.source[7:], x.c.member_id.is_(None))
                .values(member_id=event.member_id, region_id=event.region_id,
                        group_id=event.group_ids[0] if event.group_ids else None)
            )

    async def member_erased(self, session: AsyncSession, member_id: str) -> None:
        """Blank the member's name, address and words on their actions (counts stay) and shred the actions' keys."""
        x = tables.actions
        erased = (await session.execute(
            update(x).where(x.c.member_id == member_id)
            .values(member_id=None, name=None, email=None, postcode=None, comment=None, pledge_text=None,
                    letter_subject=None, letter_body=None, person_ref=func.concat("erased:", x.c.id))
            .returning(x.c.id)
        )).scalars().all()
        await self.keys.shred(session, erased, self.outbox, topics.CAMPAIGNS_SUBJECT_KEYS)

    async def meeting_scheduled(self, session: AsyncSession, event: ev.MeetingScheduled) -> None:
        """Keep what an attend ask shows; a meeting scheduled for a live campaign becomes one of its asks."""
        m = tables.meetings
        values = {"title": event.title, "kind": event.kind, "starts_at": event.starts_at, "ends_at": event.ends_at,
                  "timezone": event.timezone, "venue": event.venue, "public_url": event.public_url,
                  "campaign_id": event.campaign_id, "status": "scheduled"}
        await session.execute(
            pg_insert(m).values(meeting_id=event.meeting_id, **values)
            .on_conflict_do_update(index_elements=[m.c.meeting_id], set_=values)
        )
        if not event.campaign_id:
            return
        c, a = tables.campaigns, tables.asks
        campaign = (await session.execute(
            select(c).where(c.c.id == event.campaign_id).with_for_update()
        )).first()
        if campaign is None or campaign.status != "live":
            return
        linked = (await session.execute(
            select(a.c.id).where(a.c.campaign_id == campaign.id, a.c.kind == "attend",
                                 a.c.meeting_id == event.meeting_id)
        )).first()
        if linked is None:
            plan = AskPlan(kind="attend", title=f"Come to {event.title}"[:200], meeting_id=event.meeting_id)
            await self._emit(session, [await self._insert_ask(session, campaign.id, plan)])

    async def meeting_cancelled(self, session: AsyncSession, event: ev.MeetingCancelled) -> None:
        m = tables.meetings
        await session.execute(update(m).where(m.c.meeting_id == event.meeting_id).values(status="cancelled"))

    async def rsvp_received(self, session: AsyncSession, event: ev.RsvpReceived) -> None:
        """An RSVP to a meeting an attend ask points at is that ask's action (once per person and ask)."""
        a, c, x = tables.asks, tables.campaigns, tables.actions
        asks = (await session.execute(
            select(a).join(c, c.c.id == a.c.campaign_id)
            .where(a.c.kind == "attend", a.c.meeting_id == event.meeting_id, a.c.status == "open",
                   c.c.status == "live")
        )).all()
        member = await self._member(session, event.member_id)
        for ask in asks:
            action_id = str(uuid.uuid5(ATTEND_NAMESPACE, f"{ask.id}:{event.rsvp_id}"))
            ref = f"member:{event.member_id}" if event.member_id else f"rsvp:{event.rsvp_id}"
            now = utcnow()
            inserted = (await session.execute(
                pg_insert(x).values(
                    id=action_id, ask_id=ask.id, campaign_id=ask.campaign_id, kind="attend", person_ref=ref,
                    member_id=event.member_id, rsvp_id=event.rsvp_id, source="meeting",
                    region_id=member.region_id if member else None,
                    group_id=member.group_ids[0] if member and member.group_ids else None, created_at=now,
                ).on_conflict_do_nothing().returning(x.c.id)
            )).first()
            if inserted is not None:
                await self._emit(session, [ev.ActionTaken(
                    action_id=action_id, ask_id=ask.id, campaign_id=ask.campaign_id, kind="attend",
                    member_id=event.member_id, region_id=member.region_id if member else None,
                    group_id=member.group_ids[0] if member and member.group_ids else None, taken_at=now,
                )])

    # the MP dataset ------------------------------------------------------------------------------------
    async def load_mp_dataset(self, csv_text: str, *, replace: bool = True) -> tuple[int, int]:
        """Load (or, with replace=False, add to) the constituencies and postcodes; returns how many of each."""
        constituencies, postcodes = parse_mp_csv(csv_text)
        c, cp = tables.constituencies, tables.constituency_postcodes
        now = utcnow()
        async with self.db.transaction() as session:
            if replace:
                await session.execute(delete(cp))
                await session.execute(delete(c).where(c.c.code.not_in(list(constituencies))))
            for con in constituencies.values():
                values = {"name": con.name, "mp_name": con.mp_name, "mp_party": con.mp_party,
                          "mp_email": con.mp_email, "updated_at": now}
                await session.execute(pg_insert(c).values(code=con.code, **values)
                                      .on_conflict_do_update(index_elements=[c.c.code], set_=values))
            rows = [{"postcode_key": k, "constituency_code": v} for k, v in postcodes.items()]
            for i in range(0, len(rows), 1000):
                chunk = rows[i:i + 1000]
                stmt = pg_insert(cp).values(chunk)
                await session.execute(stmt.on_conflict_do_update(
                    index_elements=[cp.c.postcode_key], set_={"constituency_code": stmt.excluded.constituency_code}))
        return len(constituencies), len(postcodes)

    async def mp_dataset_size(self) -> tuple[int, int]:
        async with self.db.transaction() as session:
            n = (await session.execute(select(func.count()).select_from(tables.constituencies))).scalar_one()
            k = (await session.execute(select(func.count()).select_from(tables.constituency_postcodes))).scalar_one()
        return int(n), int(k)

    # queries -------------------------------------------------------------------------------------------
    async def get_campaign(self, campaign_id: str) -> Row:
        c = tables.campaigns
        async with self.db.transaction() as session:
            row = (await session.execute(select(c).where(c.c.id == campaign_id))).first()
        if row is None:
            raise CampaignNotFound(campaign_id)
        return row

    async def list_campaigns(self, *, include_closed: bool = True, limit: int = 200, offset: int = 0) -> list[Row]:
        c = tables.campaigns
        q = select(c)
        if not include_closed:
            q = q.where(c.c.status == "live")
        q = q.order_by(c.c.status.desc(), c.c.launched_at.desc(), c.c.id).limit(limit).offset(offset)
        async with self.db.transaction() as session:
            return list((await session.execute(q)).all())

    async def asks_of(self, campaign_id: str) -> list[Row]:
        a = tables.asks
        async with self.db.transaction() as session:
            return list((await session.execute(
                select(a).where(a.c.campaign_id == campaign_id).order_by(a.c.position))).all())

    async def get_ask(self, ask_id: str, campaign_id: str | None = None) -> Row:
        a = tables.asks
        q = select(a).where(a.c.id == ask_id)
        if campaign_id is not None:
            q = q.where(a.c.campaign_id == campaign_id)
        async with self.db.transaction() as session:
            row = (await session.execute(q)).first()
        if row is None:
            raise AskNotFound(ask_id)
        return row

    async def counts(self, campaign_id: str) -> dict[str, int]:
        """Actions per ask of a campaign (pledges counted when made; shown once approved)."""
        x = tables.actions
        async with self.db.transaction() as session:
            rows = (await session.execute(
                select(x.c.ask_id, func.count()).where(x.c.campaign_id == campaign_id).group_by(x.c.ask_id))).all()
        return {ask_id: int(n) for ask_id, n in rows}

    async def meeting(self, meeting_id: str | None) -> Row | None:
        if not meeting_id:
            return None
        m = tables.meetings
        async with self.db.transaction() as session:
            return (await session.execute(select(m).where(m.c.meeting_id == meeting_id))).first()

    async def pledges(self, *, ask_id: str | None = None, campaign_ids: Sequence[str] | None = None,
                      moderation: str = "approved", limit: int = 100) -> list[Row]:
        x = tables.actions
        q = select(x).where(x.c.kind == "pledge", x.c.moderation == moderation, x.c.pledge_text.is_not(None))
        if ask_id is not None:
            q = q.where(x.c.ask_id == ask_id)
        if campaign_ids is not None:
            q = q.where(x.c.campaign_id.in_(list(campaign_ids)))
        q = q.order_by(x.c.created_at.desc() if moderation == "approved" else x.c.created_at).limit(limit)
        async with self.db.transaction() as session:
            return list((await session.execute(q)).all())

    async def actions_of(self, ask_id: str, *, limit: int, offset: int) -> list[Row]:
        x = tables.actions
        async with self.db.transaction() as session:
            return list((await session.execute(
                select(x).where(x.c.ask_id == ask_id).order_by(x.c.created_at, x.c.id).limit(limit).offset(offset)
            )).all())

    async def get_action(self, action_id: str) -> Row:
        x = tables.actions
        async with self.db.transaction() as session:
            row = (await session.execute(select(x).where(x.c.id == action_id))).first()
        if row is None:
            raise ActionNotFound(action_id)
        return row

    async def petitions(self, *, limit: int, offset: int) -> tuple[list[Row], int]:
        a, c = tables.asks, tables.campaigns
        base = select(a, c.c.status.label("campaign_status"), c.c.title.label("campaign_title")).join(
            c, c.c.id == a.c.campaign_id).where(a.c.kind == "petition")
        async with self.db.transaction() as session:
            rows = (await session.execute(base.order_by(a.c.created_at, a.c.id).limit(limit).offset(offset))).all()
            total = (await session.execute(select(func.count()).where(a.c.kind == "petition"))).scalar_one()
        return list(rows), int(total)

    async def petition(self, ask_id: str) -> Row:
        a, c = tables.asks, tables.campaigns
        async with self.db.transaction() as session:
            row = (await session.execute(
                select(a, c.c.status.label("campaign_status"), c.c.title.label("campaign_title"))
                .join(c, c.c.id == a.c.campaign_id).where(a.c.id == ask_id, a.c.kind == "petition")
            )).first()
        if row is None:
            raise AskNotFound(ask_id)
        return row

    async def units(self) -> list[Row]:
        u = tables.units
        async with self.db.transaction() as session:
            return list((await session.execute(select(u).order_by(u.c.kind, u.c.name))).all())

    async def campaigns_for(self, organiser: OrganiserScope) -> list[Row]:
        rows = await self.list_campaigns(limit=1000)
        return [r for r in rows if await self.covers_campaign(organiser, r)]

    async def upcoming_meetings(self) -> list[Row]:
        m = tables.meetings
        async with self.db.transaction() as session:
            return list((await session.execute(
                select(m).where(m.c.status == "scheduled", m.c.ends_at >= utcnow()).order_by(m.c.starts_at)
            )).all())


def _no_constituency_message(postcode: str) -> str:
    return (f"We could not find a constituency for the postcode {postcode.strip() or '(empty)'}. Check it is your "
            "home postcode, or write to us and we will find your MP for you.")

