"""Inviting an organiser: the one-time link to set a password and a second factor, emailed once.
The link is a credential, so it arrives sealed with the organiser's key (see OrganiserInvited)."""

from __future__ import annotations

from services.notifications.domain import first_name_of
from services.notifications.service import NotificationService
from shared.events.catalog import OrganiserInvited
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork

SCOPE_WORDS = {"network": "the whole network", "region": "a region", "group": "a local group", "subteam": "a sub-team"}


class Invitations:
    def __init__(self, service: NotificationService) -> None:
        self.service = service

    async def organiser_invited(self, uow: UnitOfWork, envelope: Envelope, event: OrganiserInvited) -> None:
        session = uow.session
        service = self.service
        if not await service.key_ready(uow, envelope, event.organiser_id):
            return
        email = await service.keys.unseal(session, event.email)
        name = await service.keys.unseal(session, event.name)
        link = await service.keys.unseal(session, event.set_password_url)
        wording = await service.wording.current(session)
        text_body, html_body = service.renderer.render(
            "organiser_invitation",
            wording=wording,
            name=first_name_of(name),
            link=link,
            scope=SCOPE_WORDS.get(event.scope_type, event.scope_type),
            expires=f"{event.expires_at:%-d %B %Y, %H:%M} UTC",
        )
        await service.queue(
            uow,
            kind="organiser_invitation",
            subject_ref=envelope.event_id.hex,
            recipient_id=event.organiser_id,
            recipient_email=email,
            subject=f"You're invited to organise with {wording['network_name']}",
            body_text=text_body,
            body_html=html_body,
            correlation_id=envelope.correlation_id,
        )
