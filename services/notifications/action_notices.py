"""Email that answers campaigns' public forms where the page itself must reveal nothing (docs/decisions,
"repeats reveal nothing"): an action taken again is told to the address that took it, and a letter to an MP
waits for its writer to confirm it from a link sent to the address they gave. Personal fields arrive sealed with
the action's key."""

from __future__ import annotations

from sqlalchemy import select

from services.notifications import db as tables
from services.notifications.domain import first_name_of
from services.notifications.service import NotificationService
from shared import tokens
from shared.events.catalog import ActionRepeated, MpLetterAwaitingConfirmation
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork

# What the person did, in the repeat email's words ("you already ...").
DONE = {"petition": "signed this petition", "pledge": "made this pledge",
        "write_to_mp": "written this letter to your MP"}


class ActionNotices:
    def __init__(self, service: NotificationService) -> None:
        self.service = service
        self.settings = service.settings

    async def action_repeated(self, uow: UnitOfWork, envelope: Envelope, event: ActionRepeated) -> None:
        service, session = self.service, uow.session
        email = name = None
        if event.email is not None:
            if not await service.key_ready(uow, envelope, event.action_id):
                return
            email = await service.keys.unseal(session, event.email)
            name = await service.keys.unseal(session, event.name)
        elif event.member_id:
            r = tables.recipients
            row = (await session.execute(select(r.c.email, r.c.name).where(r.c.member_id == event.member_id))).first()
            email, name = (row.email, row.name) if row else (None, None)
        if not email:
            return
        base = self.settings.public_base_url.rstrip("/")
        footer = service.footer(event.member_id) if event.member_id else {}
        text_body, html_body = service.renderer.render(
            "action_repeat",
            name=first_name_of(name),
            done=DONE.get(event.kind, "taken this action"),
            ask_url=f"{base}/campaigns/{event.campaign_id}/asks/{event.ask_id}",
            preferences_url=footer.get("preferences_url", ""),
            unsubscribe_url=footer.get("unsubscribe_url", ""),
        )
        await service.queue(
            uow,
            kind="action_repeat",
            subject_ref=str(envelope.event_id),  # each repeat is told (the per-address rate limit bounds them)
            recipient_id=event.member_id or event.action_id,
            recipient_email=email,
            subject="You had already taken part",
            body_text=text_body,
            body_html=html_body,
            correlation_id=envelope.correlation_id,
        )

    async def letter_awaiting_confirmation(
        self, uow: UnitOfWork, envelope: Envelope, event: MpLetterAwaitingConfirmation
    ) -> None:
        service, session = self.service, uow.session
        if not await service.key_ready(uow, envelope, event.action_id):
            return
        email = await service.keys.unseal(session, event.sender_email)
        if not email:
            return
        base, secret = self.settings.public_base_url.rstrip("/"), self.settings.secret_key
        token = tokens.sign(secret, tokens.CONFIRM_LETTER, {"a": event.action_id})
        text_body, html_body = service.renderer.render(
            "letter_confirmation",
            name=first_name_of(await service.keys.unseal(session, event.sender_name)),
            mp_name=event.mp_name,
            constituency=event.constituency_name,
            letter_subject=await service.keys.unseal(session, event.letter_subject) or "",
            confirm_url=f"{base}/campaigns/letters/{token}",
            days=tokens.CONFIRM_LETTER_MAX_AGE_S // 86400,
        )
        await service.queue(
            uow,
            kind="letter_confirmation",
            subject_ref=str(envelope.event_id),  # a repeat before confirming sends the link again
            recipient_id=event.member_id or event.action_id,
            recipient_email=email,
            subject=f"Confirm your letter to {event.mp_name}",
            body_text=text_body,
            body_html=html_body,
            correlation_id=envelope.correlation_id,
        )
