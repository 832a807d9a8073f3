"""Links membership asks a member to confirm, emailed once each: the changes of a join for their address, and a
data download or an erasure asked for through their preferences link (decision 0006); and the link to a data
download once it is gathered. Each link is a credential,
so it arrives sealed with the member's key (see JoinChangeRequested, MemberRightsConfirmationRequested)."""

from __future__ import annotations

from datetime import datetime

from services.notifications.domain import first_name_of
from services.notifications.service import NotificationService
from shared.events.catalog import JoinChangeRequested, MemberDataReady, MemberRightsConfirmationRequested
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork


def _until(at: datetime) -> str:
    return f"{at:%-d %B %Y, %H:%M} UTC"


class MemberRequestEmails:
    def __init__(self, service: NotificationService) -> None:
        self.service = service

    async def join_change_requested(self, uow: UnitOfWork, envelope: Envelope, event: JoinChangeRequested) -> None:
        await self._send(
            uow,
            envelope,
            event,
            kind="join_change",
            subject=f"Confirm the changes to your {self.service.settings.network_name} membership",
            left=event.left,
        )

    async def rights_confirmation_requested(
        self, uow: UnitOfWork, envelope: Envelope, event: MemberRightsConfirmationRequested
    ) -> None:
        what = "erase your data" if event.action == "erase" else "download your data"
        await self._send(
            uow,
            envelope,
            event,
            kind=f"confirm_{event.action}",
            subject=f"Confirm: {what} from {self.service.settings.network_name}",
            action=event.action,
        )

    async def data_ready(self, uow: UnitOfWork, envelope: Envelope, event: MemberDataReady) -> None:
        """The link to a member's gathered data download (naming the parts still missing, if any)."""
        await self._send(
            uow,
            envelope,
            event,
            kind="data_download",
            subject=f"Your data from {self.service.settings.network_name} is ready to download",
            template="data_ready",
            waiting_on=event.waiting_on,
        )

    async def _send(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        event: JoinChangeRequested | MemberRightsConfirmationRequested | MemberDataReady,
        *,
        kind: str,
        subject: str,
        template: str | None = None,
        **context: object,
    ) -> None:
        service = self.service
        if not await service.key_ready(uow, envelope, event.member_id):
            return
        session = uow.session
        email = await service.keys.unseal(session, event.email)
        name = await service.keys.unseal(session, event.name)
        link = await service.keys.unseal(session, event.confirm_url)
        template = template or ("join_change" if kind == "join_change" else "confirm_rights")
        text_body, html_body = service.renderer.render(
            template, name=first_name_of(name), link=link, expires=_until(event.expires_at), **context
        )
        await service.queue(
            uow,
            kind=kind,
            subject_ref=envelope.event_id.hex,
            recipient_id=event.member_id,
            recipient_email=email,
            subject=subject,
            body_text=text_body,
            body_html=html_body,
            correlation_id=envelope.correlation_id,
        )
