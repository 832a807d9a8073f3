"""The SMTP adapter: email out through the configured relay, with errors classified for retry.

`Mailer.send` lets the caller stage its record of a delivery (`before_end`) once the relay is ready for the
message (its 354 to DATA), before the message and the final "." that makes the relay accept it are written, and
returns once the relay has accepted; the caller then commits that record at once. A crash before the relay's
"250" leaves the record uncommitted, so the delivery is sent again once its lease ends (the relay discarded an
unfinished message, or, if it had accepted in the moment before the crash, the receiver gets a second copy with
the same Message-ID and can drop it). A crash never loses an email marked as sent.
"""

from __future__ import annotations

import asyncio
import binascii
import email.policy
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from functools import lru_cache

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, SMTPProtocol, normalize_message_line_endings
from aiosmtplib.response import SMTPResponse

from shared.config import Settings
from shared.logging import get_logger

log = get_logger(__name__)

PERIOD_RE = re.compile(rb"(?m)^\.")
BeforeEnd = Callable[[], Awaitable[None]]
# RFC 5322 allows 998 characters a line; a header within it that is plain ASCII is written as it is.
MAX_LINE = 998
# Replies that say the relay and we disagree about where the conversation is (500 unrecognised, 502 not
# implemented, 503 bad sequence such as "nested MAIL command", 504 parameter not implemented): our state, not
# a refusal of the recipient.
OUT_OF_STEP = frozenset({500, 502, 503, 504})


@lru_cache(maxsize=256)
def _folded(name: str, value: str) -> bytes:
    """A header as email.policy.SMTP writes it (RFC 2047 encoded words where needed), for the values that need
    it; cached because a fan-out repeats the same subject and sender for every member."""
    policy = email.policy.SMTP
    return policy.header_factory(name, value).fold(policy=policy).encode("ascii")


def _header(name: str, value: str) -> bytes:
    if value.isascii() and len(name) + len(value) + 2 <= MAX_LINE:
        return f"{name}: {value}\r\n".encode("ascii")
    return _folded(name, value)


def _body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded body) of a text part in UTF-8, its lines ended as email.message ends
    them (every line, the last included); CRLF on the wire."""
    lines = text.encode("utf-8").splitlines()
    if text.isascii() and max(map(len, lines), default=0) <= MAX_LINE:
        return b"7bit", b"\r\n".join(lines) + b"\r\n"
    body = binascii.b2a_qp(b"\n".join(lines) + b"\n", istext=True).replace(b"\n", b"\r\n")
    return b"quoted-printable", body


def _part(subtype: bytes, text: str) -> bytes:
    cte, body = _body(text)
    return (
        b"Content-Type: text/" + subtype + b'; charset="utf-8"\r\nContent-Transfer-Encoding: ' + cte + b"\r\n\r\n"
    ) + body


@dataclass
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # (filename, mime type, content)
    message_id: str | None = None
    sender: str | None = None  # the From header (name and address); MAIL_FROM when None
    return_path: str | None = None  # the envelope sender (MAIL FROM), where bounces go; MAIL_FROM's when None


class TemporaryFailure(Exception):
    """The relay said try later (4xx) or could not be reached: retry with backoff."""


class PermanentFailure(Exception):
    """The relay refused the recipient or the message for good (5xx to RCPT or DATA)."""


class Unsendable(Exception):
    """The email cannot be sent as it is (no usable recipient address, a message that cannot be written): found
    before any SMTP command, so it never reaches the relay; retrying would not help."""


class _OutOfStep(Exception):
    """The relay answered as if our side of the conversation were elsewhere (see OUT_OF_STEP), before the
    staged record: the connection is dropped and the email may be tried again at once on a new one."""


def message_domain(mail_from: str) -> str:
    """The domain our Message-IDs end with: the sending address's."""
    return parseaddr(mail_from)[1].rpartition("@")[2] or "groundswell.localhost"


@lru_cache(maxsize=64)
def from_header(sender_name: str, mail_from: str) -> str:
    """The From header: the organisers' sender name with the configured sending address."""
    return formataddr((" ".join(sender_name.split()), parseaddr(mail_from)[1]))


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# An address that is a plain dot-atom (every address the service writes, VERP return paths included): quoted as
# aiosmtplib's quote_address quotes it (its RFC 5322 parsing gives it back unchanged), at a fraction of the cost.
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def smtp_path(address: str) -> bytes:
    """`address` as MAIL FROM and RCPT TO carry it (`<…>`, ASCII); ValueError (UnicodeEncodeError included) when it
    cannot be."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return quote_address(address).encode("ascii")


def envelope_recipient(address: str | None) -> str:
    """`address` once it is known to be usable in RCPT TO (ASCII, no characters that could smuggle a command),
    else Unsendable. The reason never repeats the address: it is logged and published."""
    if not address or not address.strip():
        raise Unsendable("no recipient address")
    try:
        smtp_path(address)
    except ValueError:  # UnicodeEncodeError included; the original message holds the address
        raise Unsendable("recipient address not usable in RCPT TO") from None
    return address


# What each of a pipelined group's replies must be: MAIL's, RCPT's (251: "will forward") and DATA's go-ahead.
PIPELINED_OK: tuple[tuple[int, ...], ...] = ((250,), (250, 251), (354,))


class _Replies:
    """Stands in for aiosmtplib's reply waiter (a future) while a pipelined group is answered: never done, so no
    reply is dropped; every reply in the buffer is parsed, not only the first (SMTPProtocol.data_received parses
    one a call), and kept in order; the connection's loss or a malformed reply ends the wait."""

    def __init__(self, protocol: SMTPProtocol) -> None:
        self.protocol = protocol
        self.replies: list[SMTPResponse] = []
        self.error: BaseException | None = None
        self.arrived = asyncio.Event()

    def done(self) -> bool:
        return False

    def set_result(self, response: SMTPResponse) -> None:
        self.replies.append(response)
        try:
            while (more := self.protocol._read_response_from_buffer()) is not None:
                self.replies.append(more)
        except Exception as exc:
            self.error = exc
        self.arrived.set()

    def set_exception(self, exc: BaseException) -> None:
        self.error = exc
        self.arrived.set()

    def exception(self) -> BaseException | None:
        return self.error

    async def take(self, n: int, timeout: float) -> list[SMTPResponse]:
        async with asyncio.timeout(timeout):
            while len(self.replies) < n:
                if self.error is not None:
                    raise self.error
                self.arrived.clear()
                await self.arrived.wait()
        return self.replies[:n]


class Mailer:
    """One connection to the relay, reused for many messages and reopened when it drops."""

    def __init__(self, settings: Settings, *, pipelining: bool = True) -> None:
        self.settings = settings
        self.pipelining = pipelining  # used when the relay offers it; off: one command a round trip (tests)
        self.sender = parseaddr(settings.mail_from)[1]
        self.domain = message_domain(settings.mail_from)
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    def message_bytes(self, email: OutgoingEmail) -> bytes:
        """The message as sent. Text (and HTML) without attachments is written directly, with the structure
        email.message gives it (the same headers, multipart/alternative, UTF-8 parts), at a fraction of its
        cost; anything else (attachments, a header with a line break) goes through email.message."""
        if email.attachments:
            return self.build(email).as_bytes()
        headers = [
            ("From", email.sender or self.settings.mail_from),
            ("To", email.to),
            ("Subject", email.subject),
            ("Date", format_datetime(datetime.now(UTC))),
            ("Message-ID", email.message_id or make_msgid(domain=self.domain)),
            *email.headers.items(),
        ]
        out = []
        for name, value in headers:
            if "\r" in value or "\n" in value:
                return self.build(email).as_bytes()  # refused there, as before
            out.append(_header(name, value))
        out.append(b"MIME-Version: 1.0\r\n")
        if not email.html:
            out.append(_part(b"plain", email.text))
            return b"".join(out)
        parts = [_part(b"plain", email.text), _part(b"html", email.html)]
        boundary = b"=_gs_" + uuid.uuid4().hex.encode()  # '=_' never occurs in quoted-printable
        while any(boundary in p for p in parts):
            boundary = b"=_gs_" + uuid.uuid4().hex.encode()
        out.append(b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n')
        for p in parts:  # the line end before a boundary belongs to the boundary (RFC 2046)
            out.append(b"--" + boundary + b"\r\n" + p + b"\r\n")
        out.append(b"--" + boundary + b"--\r\n")
        return b"".join(out)

    def build(self, email: OutgoingEmail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = email.sender or self.settings.mail_from
        msg["To"] = email.to
        msg["Subject"] = email.subject
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = email.message_id or make_msgid(domain=self.domain)
        for name, value in email.headers.items():
            msg[name] = value
        msg.set_content(email.text)
        if email.html:
            msg.add_alternative(email.html, subtype="html")
        for filename, mime, content in email.attachments:
            maintype, subtype = mime.split("/", 1)
            msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
        return msg

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username or None,
            password=s.smtp_password or None,
            start_tls=s.smtp_starttls,
            timeout=30,
        )
        await smtp.connect()
        if smtp.is_ehlo_or_helo_needed:
            await smtp._ehlo_or_helo_if_needed()  # the relay's extensions (PIPELINING) known before the first email
        self._smtp = smtp
        return smtp

    async def close(self) -> None:
        if self._smtp is not None:
            try:
                await self._smtp.quit()
            except Exception:
                self._smtp.close()
            self._smtp = None

    async def send(self, email: OutgoingEmail, before_end: BeforeEnd | None = None) -> None:
        """Send one email; `before_end` runs once the relay is ready for the message, just before the message and
        its final '.' are written (raising there abandons the message: the relay discards it). Returns once the
        relay has accepted it.

        Raises Unsendable (before any SMTP command), TemporaryFailure or PermanentFailure. Whatever goes wrong
        inside a mail transaction, the connection is left outside one (RSET, or dropped), so the next email on
        it starts clean; a reply that shows we were out of step with the relay is retried on a new connection,
        never reported as the recipient's refusal."""
        recipient = envelope_recipient(email.to)
        sender = email.return_path or self.sender
        try:
            message = self.message_bytes(email)
        except Exception as exc:
            raise Unsendable(f"the message could not be written ({type(exc).__name__})") from exc
        async with self._lock:
            try:
                await self._transaction(sender, recipient, message, before_end)
            except _OutOfStep as exc:
                log.warning("relay out of step with this connection; trying again on a new one", reply=str(exc))
                try:
                    await self._transaction(sender, recipient, message, before_end)
                except _OutOfStep as again:
                    raise TemporaryFailure(str(again)) from again

    async def _transaction(self, sender: str, recipient: str, message: bytes, before_end: BeforeEnd | None) -> None:
        """One mail transaction (MAIL, RCPT, DATA), its errors classified by the step that met them."""
        step = "connect"
        staged = False

        async def at_end() -> None:
            nonlocal staged
            staged = True
            if before_end is not None:
                await before_end()

        try:
            smtp = await self._connection()
            if self.pipelining and smtp.supports_extension("pipelining"):
                # MAIL, RCPT and DATA in one write, their replies read in order (RFC 2920): one round trip to
                # the relay where there were three. The first reply that is not a success is the step's refusal,
                # as if the commands had gone one at a time.
                replies = await self._pipelined(smtp, sender, recipient)
                for command, answer, expected in zip(("MAIL", "RCPT", "DATA"), replies, PIPELINED_OK, strict=True):
                    step = command  # the refusal is classified by the command refused
                    if answer.code not in expected:
                        if replies[-1].code == 354:
                            self._drop()  # the relay waits for a message: only a closed connection discards it
                        raise aiosmtplib.SMTPResponseException(answer.code, answer.message)
                await self._message(smtp, message, at_end)
            else:
                step = "MAIL"
                await smtp.mail(sender)
                step = "RCPT"
                await smtp.rcpt(recipient)
                step = "DATA"
                await self._data(smtp, message, at_end)
        except aiosmtplib.SMTPResponseException as exc:
            reply = f"{exc.code} {exc.message}"
            if exc.code in OUT_OF_STEP:
                self._drop()
                if staged:
                    raise TemporaryFailure(reply) from exc  # the caller drops its staged record; no second stage
                raise _OutOfStep(reply) from exc
            await self._reset()
            if 500 <= exc.code < 600 and step in ("RCPT", "DATA"):
                raise PermanentFailure(reply) from exc
            # 4xx; or a refusal of the connection, the login or our sender: the relay's or our configuration's
            # doing, so never counted against the recipient's address.
            raise TemporaryFailure(reply) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise TemporaryFailure(repr(exc)) from exc
        except BaseException:
            # Anything else (an error of ours, a cancellation) may leave the transaction half done: only a new
            # connection is sure to be outside it, and the relay discards what was not ended by a final '.'.
            self._drop()
            raise

    def _drop(self) -> None:
        """Close the connection without a word to the relay, which discards any transaction left open on it."""
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def _reset(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.rset()
            except BaseException as exc:
                self._drop()
                if not isinstance(exc, Exception):
                    raise

    async def _pipelined(self, smtp: aiosmtplib.SMTP, sender: str, recipient: str) -> list[SMTPResponse]:
        """MAIL, RCPT and DATA written at once; their three replies (or the connection's error).

        aiosmtplib reads one reply a command and drops what arrives while a reply waits to be picked up, so for
        the group `_Replies` stands in for its reply waiter and keeps every reply, in order."""
        mail_from, rcpt_to = smtp_path(sender), smtp_path(recipient)
        if COMMAND_INJECTION_REGEX.search(mail_from) or COMMAND_INJECTION_REGEX.search(rcpt_to):
            raise ValueError("Command arg contains a prohibited control character")
        protocol = smtp.protocol
        async with protocol._command_lock:  # type: ignore[union-attr]
            replies = _Replies(protocol)  # type: ignore[arg-type]
            protocol._response_waiter = replies  # type: ignore[union-attr, assignment]
            protocol._response_pending = True  # type: ignore[union-attr]
            try:
                protocol.write(b"MAIL FROM:" + mail_from + b"\r\nRCPT TO:" + rcpt_to + b"\r\nDATA\r\n")  # type: ignore[union-attr]
                return await replies.take(3, timeout=30)
            finally:
                protocol._response_pending = False  # type: ignore[union-attr]
                # As read_response leaves it: a new waiter, unless the connection is gone.
                transport = protocol.transport  # type: ignore[union-attr]
                protocol._response_waiter = None if transport is None else asyncio.get_running_loop().create_future()  # type: ignore[union-attr]

    async def _data(self, smtp: aiosmtplib.SMTP, message: bytes, before_end: BeforeEnd) -> None:
        protocol = smtp.protocol
        # The protocol's own lock and reply bookkeeping, as aiosmtplib's execute_data_command uses them
        # (aiosmtplib is pinned; tests cover this path against the real catcher).
        async with protocol._command_lock:  # type: ignore[union-attr]
            protocol._response_pending = True  # type: ignore[union-attr]
            protocol.write(b"DATA\r\n")  # type: ignore[union-attr]
            start = await protocol.read_response(timeout=30)  # type: ignore[union-attr]
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
        await self._message(smtp, message, before_end)

    async def _message(self, smtp: aiosmtplib.SMTP, message: bytes, before_end: BeforeEnd) -> None:
        """After the relay's 354: `before_end`, then the message and its final '.'; returns on the relay's 250."""
        protocol = smtp.protocol
        body = PERIOD_RE.sub(b"..", normalize_message_line_endings(message))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        async with protocol._command_lock:  # type: ignore[union-attr]
            try:
                await before_end()
            except BaseException:
                # Drop the connection before the final '.': the relay discards the unfinished message.
                self._drop()
                raise
            protocol._response_pending = True  # type: ignore[union-attr]
            # The message and its final '.' in one write (one system call, one segment on the wire).
            protocol.write(body + b".\r\n")  # type: ignore[union-attr]
            response = await protocol.read_response(timeout=30)  # type: ignore[union-attr]
            if response.code != 250:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
