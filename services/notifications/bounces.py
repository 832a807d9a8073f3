"""Bounces that arrive later: a relay accepts an email and its recipient's server refuses it afterwards, sending a
delivery status notification (RFC 3464) to the email's return path.

Each delivery goes out with its own return path (VERP: `<local>+bounce-<delivery id>@<domain>` of MAIL_FROM), so a
DSN names the delivery by the address it is sent to, whatever the relay wrote inside it. The receiver is a small
inbound SMTP server (aiosmtpd, `BOUNCE_SMTP_HOST`/`BOUNCE_SMTP_PORT`, off when the port is 0) that takes mail only
for such addresses; the relay's bounces are routed to it (an MX or a forward). A hard bounce (Action `failed`,
Status 5.x.x) marks the delivery `bounced` and counts against the address, suppressed after `BOUNCE_SUPPRESS_AFTER`
hard failures (suppression.py); a delayed or soft one is only recorded on the delivery.
"""

from __future__ import annotations

import asyncio
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import update

from services.notifications import db as tables
from services.notifications.domain import without_addresses
from services.notifications.suppression import Suppressions
from shared import metrics
from shared.config import Settings
from shared.events.catalog import NotificationFailed
from shared.logging import get_logger
from shared.uow import UnitsOfWork

log = get_logger(__name__)

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
NOT_OURS = "550 5.1.1 Not a bounce address of ours"


def return_path(mail_from: str, delivery_id: str) -> str:
    """The envelope sender (MAIL FROM) of one delivery: its bounces come back naming it."""
    local, domain = _sender_parts(mail_from)
    return f"{local}+bounce-{delivery_id}@{domain}"


@lru_cache(maxsize=8)
def _sender_parts(mail_from: str) -> tuple[str, str]:
    """MAIL_FROM's local part and domain (parsed once, not once an email)."""
    local, _, domain = parseaddr(mail_from)[1].partition("@")
    return local, domain


def delivery_of(address: str, mail_from: str) -> str | None:
    """The delivery id a bounce address names, if it is one of ours (MAIL_FROM's local part and domain)."""
    local, _, domain = parseaddr(mail_from)[1].lower().partition("@")
    match = re.fullmatch(rf"{re.escape(local)}\+bounce-({UUID})@{re.escape(domain)}", address.strip().lower())
    return match.group(1) if match else None


@dataclass(frozen=True)
class Bounce:
    """One recipient's outcome in a DSN."""

    action: str  # failed, delayed, delivered, relayed, expanded
    status: str  # e.g. 5.1.1
    diagnostic: str

    @property
    def hard(self) -> bool:
        return self.action == "failed" and self.status.startswith("5.")


def parse_dsn(raw: bytes) -> list[Bounce]:
    """The per-recipient outcomes of an RFC 3464 report (multipart/report; report-type=delivery-status); none
    when the message is not one."""
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    if msg.get_content_type() != "multipart/report":
        return []
    bounces = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        # The per-message fields, then one block per recipient: each a header block of its own.
        for block in part.get_payload():
            fields = {k.lower(): str(v) for k, v in block.items()} if isinstance(block, EmailMessage) else {}
            if "action" in fields:
                status = fields.get("status", "").split()[0] if fields.get("status") else ""
                bounces.append(Bounce(fields["action"].strip().lower(), status, fields.get("diagnostic-code", "")))
    return bounces


class Bounces:
    """Records bounces on their deliveries (one transaction per DSN)."""

    def __init__(self, uows: UnitsOfWork, settings: Settings) -> None:
        self.uows = uows
        self.settings = settings
        self.suppressions = Suppressions(settings.secret_key)

    async def record(self, delivery_id: str, bounces: list[Bounce]) -> bool:
        """Mark the delivery bounced (a hard bounce, once: only a delivery recorded as sent), counting it against
        its address; a soft one is noted on it. False when nothing was recorded."""
        if not bounces:
            return False
        worst = next((b for b in bounces if b.hard), bounces[0])
        d = tables.deliveries
        reason = without_addresses(f"bounced: {worst.status} {worst.diagnostic}").strip()[:2000]
        async with self.uows.begin() as uow:
            if not worst.hard:
                result = await uow.session.execute(
                    update(d).where(d.c.id == delivery_id).values(last_error=reason).returning(d.c.id)
                )
                return result.first() is not None
            row = (
                await uow.session.execute(
                    update(d)
                    .where(d.c.id == delivery_id, d.c.status == "sent")
                    .values(status="bounced", last_error=reason)
                    .returning(d.c.kind, d.c.recipient_id, d.c.recipient_email, d.c.correlation_id)
                )
            ).first()
            if row is None:
                return False
            if row.recipient_email:
                await self.suppressions.count_hard_failure(
                    uow.session, row.recipient_email, self.settings.bounce_suppress_after
                )
            uow.correlation_id = row.correlation_id or uow.correlation_id
            await uow.emit(
                NotificationFailed(
                    delivery_id=delivery_id, kind=row.kind, recipient_id=row.recipient_id, error=reason,
                    permanent=True,
                )
            )  # fmt: skip
        metrics.EMAILS_FAILED.labels(self.settings.service_name, row.kind, "true").inc()
        log.info("delivery bounced", delivery_id=delivery_id, status=worst.status)
        return True


class BounceHandler:
    """aiosmtpd handler: takes mail only for our bounce addresses and records each DSN."""

    def __init__(self, bounces: Bounces) -> None:
        self.bounces = bounces

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if delivery_of(address, self.bounces.settings.mail_from) is None:
            return NOT_OURS
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        found = parse_dsn(raw)
        for address in envelope.rcpt_tos:
            delivery_id = delivery_of(address, self.bounces.settings.mail_from)
            if delivery_id is not None:
                await self.bounces.record(delivery_id, found)
        return "250 OK"


class BounceReceiver:
    """The inbound SMTP server for bounces, run as one of the service's background tasks."""

    def __init__(self, bounces: Bounces) -> None:
        self.bounces = bounces

    def smtp(self) -> Any:
        return SMTP(BounceHandler(self.bounces), hostname="bounces.groundswell.local", decode_data=False)

    async def run(self) -> None:
        settings = self.bounces.settings
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.smtp, settings.bounce_smtp_host, settings.bounce_smtp_port)
        log.info("bounce receiver listening", port=settings.bounce_smtp_port)
        try:
            await asyncio.Event().wait()
        finally:
            server.close()
            await server.wait_closed()
