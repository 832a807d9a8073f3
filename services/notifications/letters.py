"""Letters to MPs: a member writes from a campaign; the letter goes to their MP with the member as Reply-To,
exactly as they wrote it, and the member gets a copy (in the organisers' wording, with the letter's text).
Everything the member typed arrives sealed with the action's key."""

from __future__ import annotations

from services.notifications import queries
from services.notifications.domain import first_name_of
from services.notifications.service import NotificationService
from services.notifications.wording import as_written, autoresponder_text, paragraph_lines
from shared.events.catalog import MpLetterRequested
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork


class LetterNotifications:
    def __init__(self, service: NotificationService) -> None:
        self.service = service

    async def letter_requested(self, uow: UnitOfWork, envelope: Envelope, event: MpLetterRequested) -> None:
        session = uow.session
        service = self.service
        if not await service.key_ready(uow, envelope, event.action_id):
            return
        unseal = service.keys.unseal
        subject = (
            await unseal(session, event.letter_subject) or f"A letter from a constituent in {event.constituency_name}"
        )
        body = await unseal(session, event.letter_body) or ""
        name = await unseal(session, event.sender_name) or ""
        sender = await unseal(session, event.sender_email)
        postcode = await unseal(session, event.sender_postcode) or ""
        wording = await service.wording.current(session)
        # The letter exactly as its writer left it (their greeting, paragraphs and sign-off), in both parts.
        letter = {"letter": as_written(body), "letter_paragraphs": paragraph_lines(body)}
        text_body, html_body = service.renderer.render(
            "mp_letter",
            wording=wording,
            sender_name=name,
            postcode=postcode,
            constituency=event.constituency_name,
            **letter,
        )
        await service.queue(
            uow,
            kind="mp_letter",
            subject_ref=event.action_id,
            recipient_id=f"mp:{event.constituency_code}"[:36],
            recipient_email=event.mp_email,
            reply_to=sender,
            subject=subject,
            body_text=text_body,
            body_html=html_body,
            correlation_id=envelope.correlation_id,
        )
        if event.copy_to_sender and sender:
            titles = await queries.campaign_titles(session, [event.campaign_id])
            subject, intro = autoresponder_text(
                wording,
                "mp_letter_copy",
                {
                    "first_name": first_name_of(name),
                    "mp_name": event.mp_name,
                    "constituency": event.constituency_name,
                    "campaign_title": titles.get(event.campaign_id, "the campaign"),
                },
            )
            copy_text, copy_html = service.renderer.render(
                "mp_letter_copy", wording=wording, name=first_name_of(name), intro=intro, **letter
            )
            await service.queue(
                uow,
                kind="mp_letter_copy",
                subject_ref=event.action_id,
                recipient_id=event.member_id or event.action_id,
                recipient_email=sender,
                subject=subject,
                body_text=copy_text,
                body_html=copy_html,
                correlation_id=envelope.correlation_id,
            )
