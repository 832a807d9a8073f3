"""A local SMTP server that keeps every message it receives, with a web page and a JSON API to read them.

Run: ``python -m deploy.local.smtp_catcher`` (SMTP on 127.0.0.1:1025, web on http://127.0.0.1:1080).

Messages are appended as ``.eml`` files to the mail directory (``.run/mail`` by default) together with
an ``index.jsonl`` line holding the SMTP envelope, so a restart keeps them. Only the small index lives in
memory; a message is parsed from its file when someone asks for it (a small LRU cache keeps recent ones),
so the catcher copes with hundreds of thousands of messages.

Fault injection for tests, decided per RCPT TO address:
  * local part starting with ``tempfail``: ``451 4.3.0 Try again later`` for the first 2 attempts,
    then accepted;
  * local part starting with ``reject``: ``550 5.1.1 No such user`` always;
  * local part starting with ``stall``: the first message's final "." is never answered, and the message not
    kept, until the client goes away (a sender killed before the relay accepted);
  * local part starting with ``lostreply``: the first message is kept, but its "250" never sent until the
    client goes away (a sender killed after the relay accepted, before it recorded so);
  * local part starting with ``slowreply``: the first message is kept and its "250" sent only after
    ``SLOW_REPLY_S`` (a service asked to stop while its email's reply is on the way).
  Held messages are listed by ``GET /api/held`` (their recipients) while they are held.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import email.policy
import html
import json
import logging
import os
import queue
import re
import shutil
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

TEMPFAIL_ATTEMPTS = 2
TEMPFAIL_REPLY = "451 4.3.0 Try again later"
REJECT_REPLY = "550 5.1.1 No such user"
PARSED_CACHE_SIZE = 512
HOLD_LIMIT_S = 600.0
SLOW_REPLY_S = 4.0  # how long a ``slowreply`` message waits for its "250"
HELD_TOO_LONG_REPLY = "451 4.4.2 Held too long"

log = logging.getLogger("smtp_catcher")


@dataclass(slots=True)
class CaughtMail:
    """What the catcher keeps in memory per message: the envelope and where the raw bytes are."""

    id: int
    mail_from: str
    rcpt_tos: list[str]
    received_at: float
    size: int
    peer: str = ""


@dataclass
class Rejection:
    """A RCPT TO the catcher refused on purpose (tempfail/reject fault injection)."""

    address: str
    reply: str
    at: float


@dataclass
class MailStore:
    """In-memory index of caught mail backed by one .eml file per message."""

    directory: Path
    messages: list[CaughtMail] = field(default_factory=list)
    next_id: int = 1
    tempfail_attempts: dict[str, int] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)  # recipients whose message's reply is held now
    held_before: set[str] = field(default_factory=set)  # recipients held once already (the next is answered)
    rejections: list[Rejection] = field(default_factory=list)
    _parsed: OrderedDict[int, EmailMessage] = field(default_factory=OrderedDict)
    _by_id: dict[int, CaughtMail] = field(default_factory=dict)
    _by_rcpt: dict[str, list[CaughtMail]] = field(default_factory=dict)
    _index_file: Any = None
    _arrived: asyncio.Event | None = None
    _pending: dict[int, bytes] = field(default_factory=dict)
    _writes: queue.Queue[CaughtMail | None] = field(default_factory=queue.Queue)
    _writer: threading.Thread | None = None

    # -- persistence -------------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.directory / "index.jsonl"

    def load(self) -> None:
        """Reload the index written by earlier runs (skipping entries whose .eml file is gone)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.index_path.exists():
            with self.index_path.open("rb") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a crash
                    if "next_id" in row:
                        self.next_id = max(self.next_id, int(row["next_id"]))
                        continue
                    mail = CaughtMail(
                        id=int(row["id"]),
                        mail_from=row.get("mail_from", ""),
                        rcpt_tos=list(row.get("rcpt_tos", [])),
                        received_at=float(row.get("received_at", 0)),
                        size=int(row.get("size", 0)),
                        peer=row.get("peer", ""),
                    )
                    if self.eml_path(mail.id).exists():
                        self._append(mail)
                    self.next_id = max(self.next_id, mail.id + 1)
        self._index_file = self.index_path.open("ab", buffering=0)
        self._writer = threading.Thread(target=self._write_files, name="mail-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join()
            self._writer = None
        if self._index_file is not None:
            self._index_file.close()
            self._index_file = None

    def eml_path(self, mail_id: int) -> Path:
        return self.directory / f"{mail_id:09d}.eml"

    def _append(self, mail: CaughtMail) -> None:
        self.messages.append(mail)
        self._by_id[mail.id] = mail
        for rcpt in {r.lower() for r in mail.rcpt_tos}:
            self._by_rcpt.setdefault(rcpt, []).append(mail)

    def add(self, mail_from: str, rcpt_tos: list[str], raw: bytes, peer: str = "") -> CaughtMail:
        """Index a message at once; its file is written by the writer thread, off the SMTP path."""
        mail = CaughtMail(self.next_id, mail_from, rcpt_tos, time.time(), len(raw), peer)
        self.next_id += 1
        self._pending[mail.id] = raw
        self._writes.put(mail)
        self._append(mail)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None
        return mail

    def _write_files(self) -> None:
        while True:
            mail = self._writes.get()
            try:
                if mail is None:
                    return
                raw = self._pending.get(mail.id)
                if raw is None:
                    continue  # cleared before it reached the disk
                with open(self.eml_path(mail.id), "wb") as f:
                    f.write(raw)
                row = {
                    "id": mail.id,
                    "mail_from": mail.mail_from,
                    "rcpt_tos": mail.rcpt_tos,
                    "received_at": mail.received_at,
                    "size": mail.size,
                    "peer": mail.peer,
                }
                self._index_file.write(json.dumps(row, separators=(",", ":")).encode() + b"\n")
                self._pending.pop(mail.id, None)
            except OSError:
                log.exception("Could not write message %s to %s", getattr(mail, "id", "?"), self.directory)
            finally:
                self._writes.task_done()

    def flush(self) -> None:
        """Wait until every message received so far is on disk."""
        self._writes.join()

    def arrival(self) -> asyncio.Event:
        """An event set by the next message to arrive (for long-polling readers)."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
        return self._arrived

    def clear(self) -> int:
        """Forget every message (ids keep increasing, so `since=<id>` stays meaningful)."""
        count = len(self.messages)
        self.flush()
        self._index_file.close()
        trash = self.directory.with_name(self.directory.name + f".deleted-{os.getpid()}-{time.time_ns()}")
        self.directory.rename(trash)
        self.directory.mkdir(parents=True)
        self.messages.clear()
        self._by_id.clear()
        self._by_rcpt.clear()
        self._parsed.clear()
        self.tempfail_attempts.clear()
        self.held_before.clear()
        self.rejections.clear()
        with self.index_path.open("wb") as f:
            f.write(json.dumps({"next_id": self.next_id}).encode() + b"\n")
        self._index_file = self.index_path.open("ab", buffering=0)
        threading.Thread(target=shutil.rmtree, args=(trash, True), daemon=True).start()
        return count

    # -- reading -----------------------------------------------------------------------------------
    def get(self, mail_id: int) -> CaughtMail | None:
        return self._by_id.get(mail_id)

    def raw(self, mail: CaughtMail) -> bytes:
        pending = self._pending.get(mail.id)
        return pending if pending is not None else self.eml_path(mail.id).read_bytes()

    def parsed(self, mail: CaughtMail) -> EmailMessage:
        msg = self._parsed.get(mail.id)
        if msg is None:
            msg = BytesParser(policy=email.policy.default).parsebytes(self.raw(mail))  # type: ignore[assignment]
            assert isinstance(msg, EmailMessage)
            self._parsed[mail.id] = msg
            if len(self._parsed) > PARSED_CACHE_SIZE:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(mail.id)
        return msg

    def select(self, to: str | None = None, since: str | None = None) -> list[CaughtMail]:
        """Messages matching the filters, oldest first."""
        items: list[CaughtMail] = self._by_rcpt.get(to.strip().lower(), []) if to else self.messages
        if since:
            since_id, since_ts = parse_since(since)
            if since_id is not None:
                items = items[bisect.bisect_right(items, since_id, key=lambda m: m.id) :]
            else:
                items = [m for m in items if m.received_at > since_ts]
        return items


def parse_since(since: str) -> tuple[int | None, float]:
    """`since` is either a message id (return messages with a larger id) or an ISO-8601 time."""
    since = since.strip()
    if since.isdigit():
        return int(since), 0.0
    try:
        ts = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HTTPException(400, f"since must be a message id or an ISO-8601 time, not {since!r}") from exc
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return None, ts.timestamp()


# -- message rendering -----------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _part_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    text = content if isinstance(content, str) else content.decode("utf-8", "replace")
    return text.replace("\r\n", "\n")


def _addresses(msg: EmailMessage, header: str) -> list[str]:
    values = [str(v) for v in msg.get_all(header, [])]
    return [addr for _name, addr in getaddresses(values) if addr]


def _attachments(msg: EmailMessage) -> list[EmailMessage]:
    return list(msg.iter_attachments()) if msg.is_multipart() else []


def message_json(store: MailStore, mail: CaughtMail) -> dict[str, Any]:
    msg = store.parsed(mail)
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    headers: dict[str, str] = {}
    for name, value in msg.items():
        headers.setdefault(name, str(value))
    return {
        "id": mail.id,
        "mail_from": mail.mail_from,
        "rcpt_tos": mail.rcpt_tos,
        "from": str(msg.get("From", "")),
        "to": _addresses(msg, "To"),
        "cc": _addresses(msg, "Cc"),
        "subject": str(msg.get("Subject", "")),
        "date": str(msg.get("Date", "")),
        "received_at": _iso(mail.received_at),
        "size": mail.size,
        "headers": headers,
        "header_list": [[name, str(value)] for name, value in msg.items()],
        "text": _part_text(text_part) if text_part is not None else None,  # type: ignore[arg-type]
        "html": _part_text(html_part) if html_part is not None else None,  # type: ignore[arg-type]
        "attachments": [
            {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "size": len(part.get_payload(decode=True) or b""),
            }
            for part in _attachments(msg)
        ],
    }


def message_summary(store: MailStore, mail: CaughtMail) -> dict[str, str]:
    msg = store.parsed(mail)
    return {"from": str(msg.get("From", mail.mail_from)), "subject": str(msg.get("Subject", ""))}


# -- SMTP ------------------------------------------------------------------------------------------
class CatcherHandler:
    """aiosmtpd handler: decides RCPT TO (fault injection) and stores DATA."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            self.store.rejections.append(Rejection(address, REJECT_REPLY, time.time()))
            return REJECT_REPLY
        if local.startswith("tempfail"):
            key = address.lower()
            attempts = self.store.tempfail_attempts.get(key, 0)
            if attempts < TEMPFAIL_ATTEMPTS:
                self.store.tempfail_attempts[key] = attempts + 1
                self.store.rejections.append(Rejection(address, TEMPFAIL_REPLY, time.time()))
                return TEMPFAIL_REPLY
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_EHLO(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """EHLO's reply, with PIPELINING (RFC 2920) among the extensions, as a real relay (Postfix, the big
        senders) offers it: FastSMTP answers a group of commands in one write."""
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        hold = self._hold(envelope.rcpt_tos)
        if hold == "stall":
            await self._held(envelope.rcpt_tos)  # cancelled when the client goes: nothing kept
            return HELD_TOO_LONG_REPLY
        mail = self.store.add(envelope.mail_from or "", list(envelope.rcpt_tos), raw, peer)
        if hold == "lostreply":
            await self._held(envelope.rcpt_tos)
        elif hold == "slowreply":
            await self._held(envelope.rcpt_tos, SLOW_REPLY_S)
        return f"250 OK id={mail.id}"

    def _hold(self, rcpt_tos: list[str]) -> str | None:
        """Which reply-holding fault (``stall``, ``lostreply``, ``slowreply``) the message's first recipient asks
        for, the first time only."""
        for address in rcpt_tos[:1]:
            local, key = address.split("@", 1)[0].lower(), address.lower()
            for fault in ("stall", "lostreply", "slowreply"):
                if local.startswith(fault) and key not in self.store.held_before:
                    self.store.held_before.add(key)
                    return fault
        return None

    async def _held(self, rcpt_tos: list[str], seconds: float = 0.0) -> None:
        """Wait without answering, `seconds` or up to HOLD_LIMIT_S; aiosmtpd cancels this when the client's
        connection ends."""
        addresses = {a.lower() for a in rcpt_tos}
        self.store.held.update(addresses)
        try:
            await asyncio.sleep(seconds or HOLD_LIMIT_S)
        finally:
            self.store.held.difference_update(addresses)


def _accept_any_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    """Services may be configured with SMTP credentials; the catcher accepts whatever they send."""
    return AuthResult(success=True)


_SIMPLE_PATH = re.compile(r"\s*<([^<>\s\"()\[\]\\,;:]*)>(.*)$")
_DOT_STUFFED = re.compile(rb"(^|\n)\.")
_END_OF_DATA = b"\r\n.\r\n"


class FastSMTP(SMTP):
    """aiosmtpd's SMTP with a bulk DATA reader and a fast path for plain <user@domain> addresses.

    aiosmtpd reads DATA one line at a time and parses every address with the RFC 5322 header
    parser; both dominate the cost per message, which matters when benchmarking mail throughput.
    Relies on aiosmtpd 1.4 internals (``_reader``, ``_call_handler_hook``, ``_set_post_data_state``).
    """

    # Replies that never wait for the next command's: the greeting, the end of the session, and DATA's go-ahead
    # (the client sends nothing more until it has it).
    _FLUSHED = (b"220", b"221", b"354")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_replies: list[bytes] = []

    async def push(self, status: AnyStr) -> None:
        """A reply, held while more of the client's commands are already read (a pipelined group, RFC 2920): the
        group's replies go out in one write, once the last of its commands is answered. A client that waits for
        each reply (smtplib) has nothing read ahead, so it gets every reply at once, as before."""
        response = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") if isinstance(status, str) else status
        held = self._held_replies
        held.append(response + b"\r\n")
        reader = self._reader
        if reader is not None and reader._buffer and not response.startswith(self._FLUSHED):  # type: ignore[attr-defined]
            return
        self._writer.write(b"".join(held))
        held.clear()
        await self._writer.drain()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _SIMPLE_PATH.match(arg)
        if match and (not match.group(1) or match.group(1).count("@") == 1):
            return match.group(1), match.group(2).strip()
        return super()._getaddr(arg)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 (aiosmtpd's command naming)
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        limit = self.data_size_limit or 0
        saved_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = max(limit, saved_limit) + len(_END_OF_DATA)  # type: ignore[attr-defined]
        data = b""
        too_much = False
        try:
            while not (data == b".\r\n" or data.endswith(_END_OF_DATA)):
                try:
                    chunk = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:
                    chunk = await reader.readexactly(exc.consumed)
                    too_much = True
                except asyncio.IncompleteReadError:
                    return  # the client went away in the middle of DATA
                data = (data[-4:] if too_much else data) + chunk
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]
        if too_much or (limit and len(data) > limit):
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        body = data[:-3]  # drop the terminating ".\r\n" and keep the last line's CRLF
        if body.startswith(b".") or b"\n." in body:
            body = _DOT_STUFFED.sub(rb"\1", body)
        self.envelope.content = body
        self.envelope.original_content = body
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


def smtp_factory(store: MailStore) -> SMTP:
    return FastSMTP(
        CatcherHandler(store),
        hostname="smtp-catcher.groundswell.local",
        ident="Groundswell SMTP catcher",
        decode_data=False,
        enable_SMTPUTF8=True,
        data_size_limit=50 * 1024 * 1024,
        authenticator=_accept_any_login,
        auth_require_tls=False,
    )


# -- HTTP ------------------------------------------------------------------------------------------
PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#1d3557;color:#fff;padding:.75rem 1.25rem;display:flex;gap:1rem;align-items:center}
header a{color:#fff} main{padding:1rem 1.25rem;max-width:75rem}
table{border-collapse:collapse;width:100%;background:#fff} th,td{text-align:left;padding:.4rem .6rem;
border-bottom:1px solid #ddd;vertical-align:top} th{background:#eef} tr:hover td{background:#f4f7ff}
pre{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:.75rem}
iframe{width:100%;height:32rem;border:1px solid #ddd;background:#fff} dt{font-weight:600}
.muted{color:#555} button{font:inherit}
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>"
        f"<header><strong>Groundswell SMTP catcher</strong><a href='/'>All mail</a>"
        f"<span class=muted style='color:#dde'>SMTP on port 1025</span></header>"
        f"<main>{body}</main></body></html>"
    )


def create_app(store: MailStore) -> FastAPI:
    app = FastAPI(title="Groundswell SMTP catcher", docs_url="/api/docs", redoc_url=None)

    def _lookup(mail_id: int) -> CaughtMail:
        mail = store.get(mail_id)
        if mail is None:
            raise HTTPException(404, f"No caught message with id {mail_id}")
        return mail

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/count")
    async def count(to: str | None = None, since: str | None = None) -> dict[str, Any]:
        items = store.select(to, since) if (to or since) else store.messages
        return {"count": len(items), "last_id": store.messages[-1].id if store.messages else 0}

    @app.get("/api/messages")
    async def list_messages(
        to: str | None = Query(None, description="an envelope recipient (RCPT TO), case-insensitive"),
        since: str | None = Query(None, description="a message id or an ISO-8601 time; only newer messages"),
        limit: int = Query(1000, ge=1, le=100_000),
        order: str = Query("desc", pattern="^(asc|desc)$"),
        wait: float = Query(0, ge=0, le=60, description="seconds to wait for a first match"),
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait
        while True:
            arrived = store.arrival()
            items = store.select(to, since)
            if items or time.monotonic() >= deadline:
                break
            try:
                await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                pass
        chosen = items[-limit:][::-1] if order == "desc" else items[:limit]
        return [message_json(store, m) for m in chosen]

    @app.delete("/api/messages")
    async def clear_messages() -> dict[str, int]:
        return {"deleted": store.clear()}

    @app.get("/api/messages/{mail_id}")
    async def get_message(mail_id: int) -> dict[str, Any]:
        return message_json(store, _lookup(mail_id))

    @app.get("/api/messages/{mail_id}/raw")
    async def get_raw(mail_id: int) -> Response:
        return Response(store.raw(_lookup(mail_id)), media_type="text/plain; charset=utf-8")

    @app.get("/api/messages/{mail_id}/attachments/{index}")
    async def get_attachment(mail_id: int, index: int) -> Response:
        parts = _attachments(store.parsed(_lookup(mail_id)))
        if not 0 <= index < len(parts):
            raise HTTPException(404, f"Message {mail_id} has no attachment number {index}")
        part = parts[index]
        filename = (part.get_filename() or f"attachment-{index}").replace('"', "")
        return Response(
            part.get_payload(decode=True) or b"",
            media_type=part.get_content_type(),
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @app.get("/api/held")
    async def held() -> list[str]:
        return sorted(store.held)

    @app.get("/api/rejections")
    async def rejections() -> list[dict[str, Any]]:
        return [{"address": r.address, "reply": r.reply, "at": _iso(r.at)} for r in store.rejections]

    @app.get("/", response_class=HTMLResponse)
    async def index(to: str | None = None, limit: int = Query(200, ge=1, le=5000)) -> HTMLResponse:
        items = store.select(to, None)
        rows = []
        for mail in items[-limit:][::-1]:
            summary = message_summary(store, mail)
            subject = html.escape(summary["subject"] or "(no subject)")
            rows.append(
                f"<tr><td>{mail.id}</td><td>{_iso(mail.received_at)}</td>"
                f"<td>{html.escape(summary['from'])}</td><td>{html.escape(', '.join(mail.rcpt_tos))}</td>"
                f"<td><a href='/messages/{mail.id}'>{subject}</a></td></tr>"
            )
        shown = f"Showing the newest {min(limit, len(items))} of {len(items)} messages"
        body = (
            f"<h1>Caught mail</h1><form method=get><label>Recipient <input name=to type=email "
            f"value='{html.escape(to or '')}'></label> <button>Filter</button></form>"
            f"<p class=muted>{shown}{' to ' + html.escape(to) if to else ''}, newest first.</p>"
            "<table><thead><tr><th scope=col>#</th><th scope=col>Received (UTC)</th><th scope=col>From</th>"
            "<th scope=col>To</th><th scope=col>Subject</th></tr></thead><tbody>"
            + ("".join(rows) or "<tr><td colspan=5>No mail caught yet.</td></tr>")
            + "</tbody></table>"
        )
        return _page("Caught mail", body)

    @app.get("/messages/{mail_id}", response_class=HTMLResponse)
    async def show(mail_id: int) -> HTMLResponse:
        mail = _lookup(mail_id)
        data = message_json(store, mail)
        headers = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in data["header_list"])
        attachments = "".join(
            f"<li><a href='/api/messages/{mail_id}/attachments/{i}'>"
            f"{html.escape(a['filename'] or '(unnamed)')}"
            f"</a> ({html.escape(a['content_type'])}, {a['size']} bytes)</li>"
            for i, a in enumerate(data["attachments"])
        )
        parts = [
            f"<h1>{html.escape(data['subject'] or '(no subject)')}</h1>",
            f"<p><a href='/api/messages/{mail_id}/raw'>Raw message</a> · "
            f"<a href='/api/messages/{mail_id}'>JSON</a></p>",
            f"<p>Envelope: MAIL FROM &lt;{html.escape(mail.mail_from)}&gt; RCPT TO "
            f"{html.escape(', '.join('<' + r + '>' for r in mail.rcpt_tos))}</p>",
            f"<h2>Headers</h2><dl>{headers}</dl>",
        ]
        if data["text"] is not None:
            parts.append(f"<h2>Text part</h2><pre>{html.escape(data['text'])}</pre>")
        if data["html"] is not None:
            parts.append(
                "<h2>HTML part</h2><iframe title='HTML part of the message' sandbox "
                f'srcdoc="{html.escape(data["html"], quote=True)}"></iframe>'
            )
        if attachments:
            parts.append(f"<h2>Attachments</h2><ul>{attachments}</ul>")
        return _page(data["subject"] or "Message", "".join(parts))

    @app.exception_handler(FileNotFoundError)
    async def gone(request: Any, exc: FileNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": "The message file was deleted"}, status_code=404)

    return app


def default_mail_dir() -> Path:
    state = os.environ.get("GROUNDSWELL_STATE_DIR") or str(Path(__file__).resolve().parents[2] / ".run")
    return Path(state) / "mail"


async def serve(host: str, smtp_port: int, http_port: int, mail_dir: Path) -> None:
    import uvicorn

    store = MailStore(mail_dir)
    store.load()
    loop = asyncio.get_running_loop()
    smtp_server = await loop.create_server(lambda: smtp_factory(store), host, smtp_port, reuse_address=True)
    config = uvicorn.Config(
        create_app(store), host=host, port=http_port, log_level="warning", access_log=False, lifespan="off"
    )
    web = uvicorn.Server(config)
    log.warning(
        "SMTP catcher: SMTP on %s:%d, web on http://%s:%d, %d messages reloaded from %s",
        host,
        smtp_port,
        host,
        http_port,
        len(store.messages),
        mail_dir,
    )
    try:
        await web.serve()  # returns on SIGINT/SIGTERM (uvicorn installs the handlers)
    finally:
        smtp_server.close()
        await smtp_server.wait_closed()
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("SMTP_CATCHER_HOST", "127.0.0.1"))
    parser.add_argument("--smtp-port", type=int, default=int(os.environ.get("SMTP_CATCHER_SMTP_PORT", "1025")))
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("SMTP_CATCHER_HTTP_PORT", "1080")))
    mail_dir = Path(os.environ.get("SMTP_CATCHER_DIR") or default_mail_dir())
    parser.add_argument("--mail-dir", type=Path, default=mail_dir)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        import uvloop  # installed with uvicorn[standard]; roughly halves the per-message cost

        uvloop.run(serve(args.host, args.smtp_port, args.http_port, args.mail_dir))
    except ImportError:
        asyncio.run(serve(args.host, args.smtp_port, args.http_port, args.mail_dir))


if __name__ == "__main__":
    main()
