"""Notifications' part of a member's data download (MemberDataRequested): the emails sent to them and what became
of each (sent, failed, bounced, cancelled), what it keeps of their choices, and their digests if they organise."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.notifications import db as tables
from services.notifications.service import NotificationService
from shared.events.catalog import MemberDataRequested, NotificationsDataOfMember
from shared.events.envelope import Envelope
from shared.member_data import answer, when
from shared.uow import UnitOfWork


async def answer_member_data(
    service: NotificationService, uow: UnitOfWork, envelope: Envelope, event: MemberDataRequested
) -> None:
    if not await service.key_ready(uow, envelope, event.member_id):
        return  # parked until the member's key arrives (dropped if it was destroyed: they were erased)
    session = uow.session
    d = tables.deliveries
    deliveries = (await session.execute(
        select(d.c.kind, d.c.subject, d.c.recipient_email, d.c.status, d.c.attempts, d.c.last_error, d.c.created_at,
               d.c.sent_at)
        .where(d.c.recipient_id == event.member_id)
        .order_by(d.c.created_at)
    )).all()
    r = tables.recipients
    recipient = (await session.execute(
        select(r.c.email, r.c.name, r.c.email_consent, r.c.email_topics, r.c.status).where(
            r.c.member_id == event.member_id)
    )).first()
    o, s = tables.organisers, tables.digest_subscriptions
    organiser = (await session.execute(select(o.c.organiser_id, o.c.digest_period).where(
        o.c.member_id == event.member_id))).first()
    subscriptions = [] if organiser is None else (await session.execute(
        select(s.c.role, s.c.scope_type, s.c.scope_id, s.c.last_digest_at, s.c.next_digest_at)
        .where(s.c.organiser_id == organiser.organiser_id)
    )).all()
    part: dict[str, Any] = {
        "about": "The emails we sent you and what became of each; your email choices; your digests if you organise.",
        "emails": [
            {"kind": x.kind, "subject": x.subject, "to": x.recipient_email, "status": x.status,
             "attempts": x.attempts, "error": x.last_error, "queued_at": when(x.created_at),
             "sent_at": when(x.sent_at)}
            for x in deliveries
        ],
        "email_choices": (
            {"email": recipient.email, "name": recipient.name, "email_consent": recipient.email_consent,
             "kinds_of_email": recipient.email_topics, "status": recipient.status}
            if recipient else None
        ),
        "digests": (
            {"period": organiser.digest_period,
             "subscriptions": [{"role": x.role, "scope": x.scope_type, "scope_id": x.scope_id or None,
                                "last_sent_at": when(x.last_digest_at), "next_at": when(x.next_digest_at)}
                               for x in subscriptions]}
            if organiser else None
        ),
    }
    await uow.emit(
        await answer(session, service.keys, NotificationsDataOfMember, event.request_id, event.member_id, part)
    )
