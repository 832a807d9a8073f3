"""The SMTP adapter: one email out through the configured relay, with errors classified for retry."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from shared.config import Settings


@dataclass
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # (filename, mime type, content)
    message_id: str | None = None


class TemporaryFailure(Exception):
    """The relay said try later (4xx) or could not be reached: retry with backoff."""


class PermanentFailure(Exception):
    """The relay refused the message for good (5xx)."""


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, email: OutgoingEmail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.mail_from
        msg["To"] = email.to
        msg["Subject"] = email.subject
        msg["Message-ID"] = email.message_id or make_msgid(domain="groundswell.local")
        for name, value in email.headers.items():
            msg[name] = value
        msg.set_content(email.text)
        if email.html:
            msg.add_alternative(email.html, subtype="html")
        for filename, mime, content in email.attachments:
            maintype, subtype = mime.split("/", 1)
            msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
        return msg

    async def send(self, email: OutgoingEmail) -> None:
        s = self.settings
        try:
            await aiosmtplib.send(
                self.build(email),
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username or None,
                password=s.smtp_password or None,
                start_tls=s.smtp_starttls,
                timeout=30,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(400 <= c < 500 for c in codes):
                raise TemporaryFailure(str(exc)) from exc
            raise PermanentFailure(str(exc)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise TemporaryFailure(f"{exc.code} {exc.message}") from exc
            raise PermanentFailure(f"{exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporaryFailure(repr(exc)) from exc
