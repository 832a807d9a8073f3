"""Campaigns' part of a member's data download (MemberDataRequested): their actions (signatures, pledges, letters to
their MP, shares, attendance asks) with what they wrote, and their place on the engagement ladder."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.campaigns import db as tables
from shared.crypto import KeyStore
from shared.events.catalog import CampaignsDataOfMember, MemberDataRequested
from shared.member_data import answer, when
from shared.uow import UnitOfWork


async def answer_member_data(uow: UnitOfWork, member_keys: KeyStore, event: MemberDataRequested) -> None:
    session = uow.session
    x, a, c = tables.actions, tables.asks, tables.campaigns
    rows = (await session.execute(
        select(x, a.c.title.label("ask_title"), c.c.title.label("campaign_title"))
        .join(a, a.c.id == x.c.ask_id)
        .join(c, c.c.id == x.c.campaign_id)
        .where(x.c.member_id == event.member_id)
        .order_by(x.c.created_at)
    )).all()
    m = tables.members
    standing = (await session.execute(
        select(m.c.level, m.c.level_since, m.c.actions, m.c.attended, m.c.roles).where(m.c.member_id == event.member_id)
    )).first()
    part: dict[str, Any] = {
        "about": "What you did in campaigns: signatures, pledges, letters to your MP, shares; and your engagement.",
        "actions": [
            {
                "campaign": row.campaign_title,
                "ask": row.ask_title,
                "kind": row.kind,
                "taken_at": when(row.created_at),
                "name_given": row.name,
                "email_given": row.email,
                "postcode_given": row.postcode,
                "comment": row.comment,
                "pledge": row.pledge_text,
                "pledge_moderation": row.moderation,
                "mp": row.mp_name,
                "constituency": row.constituency_code,
                "letter_subject": row.letter_subject,
                "letter_body": row.letter_body,
                "letter_confirmed_at": when(row.letter_confirmed_at),
                "shared_on": row.channel,
            }
            for row in rows
        ],
        "engagement": (
            {"level": standing.level, "since": when(standing.level_since), "actions": standing.actions,
             "meetings_attended": standing.attended, "roles": list(standing.roles)}
            if standing else None
        ),
    }
    await uow.emit(await answer(session, member_keys, CampaignsDataOfMember, event.request_id, event.member_id, part))
