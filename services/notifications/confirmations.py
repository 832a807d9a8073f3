"""Confirmations of public actions: someone who signs a petition or makes a pledge gets an email saying so, and
again when organisers publish their pledge, in the organisers' wording (wording.py, the emails page). The address
is the one they typed (sealed with the action's key) or, for a member acting through their own link, the one in
the recipients mirror; the pledge's publication goes to the address its first confirmation went to (nothing is
sent when that was erased)."""

from __future__ import annotations

from sqlalchemy import select

from services.notifications import db as tables
from services.notifications import queries
from services.notifications.domain import confirmation_kind, first_name_of
from services.notifications.service import NotificationService
from services.notifications.wording import AUTORESPONDERS, autoresponder_text, paragraph_lines
from shared.events.catalog import ActionTaken, PledgePublished
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork

NO_FOOTER = {"preferences_url": "", "unsubscribe_url": ""}  # someone who is not a member: nothing to manage
SAMPLE = {"first_name": "Ada", "campaign_title": "Fair Pay Now", "group_name": "Northfield group",
          "mp_name": "Chris Holloway", "constituency": "Nottingham South"}  # fmt: skip
SAMPLE_LETTER = "Dear Chris Holloway,\n\nAs your constituent I ask you to act.\n\nYours sincerely,\nAda Okafor"


def render_confirmation(
    service: NotificationService, wording: dict[str, str], first_name: str, intro: list[str], campaign_id: str,
    footer: dict[str, str],
) -> tuple[str, str]:
    """An action's confirmation: the organisers' words and a link back to the campaign."""
    base = service.settings.public_base_url.rstrip("/")
    return service.renderer.render(
        "confirmation", wording=wording, name=first_name, intro=intro, link_label="See the campaign",
        link_url=f"{base}/campaigns/{campaign_id}", **footer,
    )  # fmt: skip


def autoresponder_previews(service: NotificationService, wording: dict[str, str]) -> list[dict[str, str]]:
    """Each autoresponder with `wording`, filled in for a sample person, as the emails page previews them."""
    previews = []
    sample_meeting = {"title": "Monthly organising meeting", "when": "Thu 12 Mar, 19:00", "venue": "Community Centre",
                      "public_url": "#"}  # fmt: skip
    footer = service.footer("00000000-0000-0000-0000-000000000000")
    for a in AUTORESPONDERS:
        subject, intro = autoresponder_text(wording, a.kind, SAMPLE)
        if a.kind == "welcome":
            text, html = service.renderer.render(
                "welcome", wording=wording, name="Ada", intro=intro, group_name=SAMPLE["group_name"],
                meetings=[sample_meeting], confirm_url=None, **footer,
            )  # fmt: skip
        elif a.kind == "mp_letter_copy":
            text, html = service.renderer.render(
                "mp_letter_copy", wording=wording, name="Ada", intro=intro, letter=SAMPLE_LETTER,
                letter_paragraphs=paragraph_lines(SAMPLE_LETTER),
            )  # fmt: skip
        else:
            text, html = render_confirmation(service, wording, "Ada", intro, "sample", NO_FOOTER)
        previews.append({"heading": a.heading, "subject": subject, "text": text, "html": html})
    return previews


class ActionConfirmations:
    def __init__(self, service: NotificationService) -> None:
        self.service = service

    async def action_taken(self, uow: UnitOfWork, envelope: Envelope, event: ActionTaken) -> None:
        kind = confirmation_kind(event.kind)
        if kind is None:
            return  # letters have their copy (letters.py); an RSVP its own confirmation; a share nothing
        service, session = self.service, uow.session
        if event.email is not None:
            if not await service.key_ready(uow, envelope, event.action_id):
                return
            email = await service.keys.unseal(session, event.email)
            name = await service.keys.unseal(session, event.name)
        elif event.member_id:
            r = tables.recipients
            row = (await session.execute(select(r.c.email, r.c.name).where(r.c.member_id == event.member_id))).first()
            email, name = (row.email, row.name) if row else (None, None)
        else:
            return
        if not email:
            return
        wording = await service.wording.current(session)
        titles = await queries.campaign_titles(session, [event.campaign_id])
        first_name = first_name_of(name)
        subject, intro = autoresponder_text(
            wording, kind, {"first_name": first_name, "campaign_title": titles.get(event.campaign_id, "the campaign")}
        )
        footer = service.footer(event.member_id) if event.member_id else NO_FOOTER
        text_body, html_body = render_confirmation(service, wording, first_name, intro, event.campaign_id, footer)
        await self._queue(uow, envelope, kind, event.action_id, event.member_id or event.action_id, email, subject,
                          text_body, html_body)  # fmt: skip

    async def pledge_published(self, uow: UnitOfWork, envelope: Envelope, event: PledgePublished) -> None:
        service, session = self.service, uow.session
        d = tables.deliveries
        received = (
            await session.execute(
                select(d.c.recipient_id, d.c.recipient_email).where(
                    d.c.kind == "pledge_received", d.c.subject_ref == event.action_id
                )
            )
        ).first()
        if received is None or not received.recipient_email:
            return
        name = None
        if event.member_id:
            r = tables.recipients
            name = (await session.execute(select(r.c.name).where(r.c.member_id == event.member_id))).scalar()
        wording = await service.wording.current(session)
        titles = await queries.campaign_titles(session, [event.campaign_id])
        first_name = first_name_of(name)
        subject, intro = autoresponder_text(
            wording,
            "pledge_published",
            {"first_name": first_name, "campaign_title": titles.get(event.campaign_id, "the campaign")},
        )
        footer = service.footer(event.member_id) if event.member_id else NO_FOOTER
        text_body, html_body = render_confirmation(service, wording, first_name, intro, event.campaign_id, footer)
        await self._queue(uow, envelope, "pledge_published", event.action_id, received.recipient_id,
                          received.recipient_email, subject, text_body, html_body)  # fmt: skip

    async def _queue(
        self, uow: UnitOfWork, envelope: Envelope, kind: str, action_id: str, recipient_id: str, email: str,
        subject: str, text_body: str, html_body: str,
    ) -> None:  # fmt: skip
        await self.service.queue(
            uow,
            kind=kind,
            subject_ref=action_id,
            recipient_id=recipient_id,
            recipient_email=email,
            subject=subject,
            body_text=text_body,
            body_html=html_body,
            correlation_id=envelope.correlation_id,
        )
