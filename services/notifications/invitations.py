"""Emails about an organiser's account: the invitation (the one-time link to set a password and a second factor,
emailed once; the link is a credential, so it arrives sealed with the organiser's key, see OrganiserInvited), and
the warning that someone is guessing at their sign-in (once per lockout, OrganiserSignInLocked)."""

from __future__ import annotations

from services.notifications.domain import first_name_of
from services.notifications.service import NotificationService
from shared.events.catalog import OrganiserInvited, OrganiserSignInLocked
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

    async def sign_in_locked(self, uow: UnitOfWork, envelope: Envelope, event: OrganiserSignInLocked) -> None:
        """Tell the organiser their account is being guessed at, what happens now and what to do."""
        session = uow.session
        service = self.service
        if not await service.key_ready(uow, envelope, event.organiser_id):
            return
        email = await service.keys.unseal(session, event.email)
        name = await service.keys.unseal(session, event.name)
        text_body, html_body = service.renderer.render(
            "organiser_sign_in_locked",
            name=first_name_of(name),
            failures=event.failures,
            until=f"{event.locked_until:%-d %B %Y, %H:%M} UTC",
        )
        await service.queue(
            uow,
            kind="organiser_sign_in_locked",
            subject_ref=envelope.event_id.hex,
            recipient_id=event.organiser_id,
            recipient_email=email,
            subject=f"Someone is trying to sign in to your {service.settings.network_name} account",
            body_text=text_body,
            body_html=html_body,
            correlation_id=envelope.correlation_id,
        )
