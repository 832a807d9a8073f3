"""Sending: due deliveries go out through SMTP, throttled, with unsubscribe headers and attachments.

Several senders (one SMTP connection each) run per process and any number of processes may run. A sender
leases a batch of deliveries (status 'sending', `lease_until`: claimed with FOR UPDATE SKIP LOCKED, so no
two senders hold one). For each, the sender stages its record as sent (the row locked, still its own lease, the
address not suppressed meanwhile) while MAIL, RCPT and DATA go out, writes the message and its final '.' only
once that record is in place, and commits the record the moment the relay answers "250" (that COMMIT runs on a
second database connection while the next email's commands go out; it must be done before that email's '.', so
a sender has at most one email accepted and not yet recorded). So:
  * a sender killed before the relay accepted leaves its deliveries 'sending': when their lease runs out the
    reaper makes them due again and another sender sends them (the relay discarded the unfinished message);
  * a sender killed after the relay accepted but before its COMMIT reached PostgreSQL (the relay's reply and
    one COMMIT message: well under a millisecond on a local relay) sends that email again after the lease;
    both copies carry the same Message-ID (the delivery's id), so a receiver can drop the second;
  * a COMMIT that fails while the sender lives on (PostgreSQL restarted, the connection broke, in that moment) is
    not such a kill: the sender keeps the accepted email in memory and records it as sent as soon as the database
    answers again, before it claims anything or makes any lease due again (`record_accepted`).
A delivery is never marked sent that the relay did not accept: at least once, never lost
(docs/delivery-guarantees.md).

A delivery that cannot be sent (no address, an email that cannot be prepared) is failed on its own, with its
reason in `last_error`, before any SMTP command; an unexpected error while sending is retried with backoff and
failed after `max_attempts`. Either way it never holds up, nor is blamed on, anyone else's email.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import LargeBinary, Uuid, bindparam, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.notifications import db as tables
from services.notifications.bounces import return_path
from services.notifications.domain import without_addresses
from services.notifications.mailer import (
    Mailer,
    OutgoingEmail,
    PermanentFailure,
    TemporaryFailure,
    Unsendable,
    from_header,
    message_domain,
)
from services.notifications.suppression import (
    MARKETING_KINDS,
    REACHES_LEAVERS,
    STOPS_EVERYTHING,
    Suppressions,
    blocks,
)
from services.notifications.wording import EmailSettings, one_line
from shared import metrics, tokens
from shared.config import Settings
from shared.db import Database
from shared.events.catalog import NotificationFailed, NotificationSent
from shared.events.envelope import Envelope
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.uow import UnitsOfWork

log = get_logger(__name__)

# What a kind of email attaches, computed when it is sent: (session, delivery row) -> [(name, mime, bytes)].
AttachmentProvider = Callable[[AsyncSession, Any], Awaitable[list[tuple[str, str, bytes]]]]

NO_ADDRESS = "no recipient address"

# The due rows are picked once (a materialised CTE): as `id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` the
# planner may rescan the subquery, each rescan skipping the rows already locked, and lease far more than n.
CLAIM_SQL = text(
    "WITH due AS MATERIALIZED (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now() "
    "ORDER BY priority, next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) "
    "UPDATE deliveries d SET status = 'sending', lease_until = now() + make_interval(secs => :lease_s) "
    "FROM due WHERE d.id = due.id "
    "RETURNING d.id, d.kind, d.subject_ref, d.recipient_id, d.recipient_email, d.subject, d.body_text, d.body_html, "
    "d.attempts, d.correlation_id, d.next_attempt_at, d.reply_to, d.lease_until"
)
# A delivery being recorded as sent is locked until the relay answers: skipped here, not waited for.
RELEASE_SQL = text(
    "UPDATE deliveries SET status = 'pending', lease_until = NULL WHERE id IN (SELECT id FROM deliveries "
    "WHERE status = 'sending' AND lease_until < now() FOR UPDATE SKIP LOCKED)"
)
RELEASE_CLAIMED_SQL = text(
    "UPDATE deliveries SET status = 'pending', lease_until = NULL WHERE id = ANY(:ids) AND status = 'sending'"
)
SUPPRESSIONS_SQL = text("SELECT email, reason FROM suppressions WHERE email = ANY(:keys)")
SUPPRESS_CLAIMED_SQL = text(
    "UPDATE deliveries SET status = 'suppressed', lease_until = NULL WHERE id = ANY(:ids) AND status = 'sending'"
)
# Whether the address (its keyed hash, :key) is suppressed for this kind of email (see suppression.py).
_SUPPRESSED = (
    "EXISTS (SELECT 1 FROM suppressions s WHERE s.email = :key AND (s.reason IN ("
    + ", ".join(f"'{reason}'" for reason in sorted(STOPS_EVERYTHING))
    + ") AND NOT (s.reason = 'left' AND :reaches_leavers) OR :marketing))"
)


def _sent_with_its_event_sql(where: str) -> str:
    """A delivery marked sent where `where` holds and, in the same statement, its NotificationSent in the outbox
    (written only when the record is: the event is the record's, as `uow.emit` would write it)."""
    return (
        "WITH marked AS (UPDATE deliveries SET status = 'sent', attempts = :attempts, sent_at = :now, "
        f"lease_until = NULL WHERE id = :id AND {where} RETURNING id) "
        "INSERT INTO outbox (event_id, event_type, topic, key, shard, payload, headers) "
        "SELECT CAST(:event_id AS uuid), :event_type, :topic, :event_key, CAST(:shard AS smallint), "
        "CAST(:payload AS bytea), CAST(CAST(:headers AS text) AS jsonb) FROM marked RETURNING event_id"
    )


class RawStatement:
    """A statement every email runs, sent on the asyncpg connection itself (its `:name` parameters numbered once):
    SQLAlchemy's compiling of parameters and its transaction bookkeeping cost more CPU than the statement's round
    trip, three times an email."""

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        self.sql = re.sub(r"(?<![:\w]):(\w+)", number, sql)
        self.names = tuple(names)

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


# The record staged before the final '.' (committed once the relay accepts): still this sender's lease (its
# `lease_until`, a fencing token: a lease that ran out and was claimed again is another's), and the address not
# suppressed meanwhile; its event in the same statement (one round trip).
STAGE_SENT = RawStatement(
    _sent_with_its_event_sql(f"status = 'sending' AND lease_until = :lease_until AND NOT {_SUPPRESSED}")
)
# A delivery the relay accepted whose record's COMMIT did not reach PostgreSQL (the database restarted, or the
# connection broke, in that moment): recorded as sent as soon as the database answers again, whatever became of its
# lease, since the relay has it. A sender that claimed it again meanwhile then finds it sent when it stages its own
# record, and abandons its copy before the '.'; already sent, or cancelled, it is left as it is.
RECORD_ACCEPTED_SQL = text(_sent_with_its_event_sql("status IN ('sending', 'pending')")).bindparams(
    bindparam("event_id", type_=Uuid), bindparam("payload", type_=LargeBinary)
)
# When staging the record finds the delivery no longer this sender's to send: marked suppressed if its address was
# suppressed since the claim; the delivery's status then ('suppressed' too when it was cancelled meanwhile, e.g.
# its member erased; otherwise another sender has it).
SUPPRESS_ONE = RawStatement(
    "WITH s AS (UPDATE deliveries SET status = 'suppressed', lease_until = NULL "
    f"WHERE id = :id AND status = 'sending' AND {_SUPPRESSED} RETURNING status) "
    "SELECT coalesce((SELECT status FROM s), (SELECT status FROM deliveries WHERE id = :id))"
)


class RecordConnection:
    """The asyncpg connection under a sender's session, for what every email does on it: BEGIN and its staged
    record, then COMMIT (or ROLLBACK). Everything else on the connection (a failure's record, attachments) goes
    through the session, outside these transactions.

    A COMMIT may open the next email's transaction in the same message (`COMMIT; BEGIN`: one round trip an email
    fewer, off the next email's path); that transaction holds nothing (no statement, no snapshot) until the next
    record is staged in it, and is ended (`rollback`) before the session uses the connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.ahead = False  # a transaction opened by the last COMMIT, nothing in it yet

    @classmethod
    async def of(cls, connection: AsyncConnection) -> RecordConnection:
        raw = await connection.get_raw_connection()
        return cls(raw.driver_connection)

    async def stage(self, params: dict[str, Any]) -> str | None:
        """BEGIN (unless the last COMMIT opened the transaction) and the staged record; None when it is in place,
        else the delivery's status (the staging committed: the delivery suppressed meanwhile, cancelled or
        another's)."""
        if self.ahead:
            self.ahead = False
        else:
            await self.conn.execute("BEGIN")
        if await self.conn.fetchval(STAGE_SENT.sql, *STAGE_SENT.args(params)) is not None:
            return None
        status = await self.conn.fetchval(SUPPRESS_ONE.sql, *SUPPRESS_ONE.args(params))
        await self.commit()
        return str(status)

    async def commit(self, begin_next: bool = False) -> None:
        """COMMIT; with `begin_next`, the next email's BEGIN in the same message."""
        self.ahead = False
        await self.conn.execute("COMMIT; BEGIN" if begin_next else "COMMIT")
        self.ahead = begin_next

    async def rollback(self) -> None:
        """End the transaction on the connection, if any (a staged record dropped, or one opened ahead)."""
        self.ahead = False
        if not self.conn.is_closed() and self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")

    async def release(self) -> None:
        """Before the connection goes back to the pool: no transaction of ours left open on it (SQLAlchemy's reset
        does not know of them), a staged record dropped; a connection that cannot is closed, and replaced."""
        try:
            await self.rollback()
        except Exception:
            self.conn.terminate()


class LeaseLost(Exception):
    """This sender's lease on a delivery ran out and the delivery went to another sender."""


class SuppressedMeanwhile(Exception):
    """The address was suppressed for this kind of email, or the delivery cancelled, after it was claimed."""


class Accepted:
    """An email the relay accepted whose record as sent is not yet in the database (its COMMIT failed)."""

    __slots__ = ("id", "kind", "recipient_id", "correlation_id", "attempts", "sent_at")

    def __init__(self, row: Any, attempts: int, sent_at: datetime) -> None:
        self.id, self.kind, self.recipient_id = row.id, row.kind, row.recipient_id
        self.correlation_id, self.attempts, self.sent_at = row.correlation_id, attempts, sent_at


class Claimed:
    """A leased delivery row and its address's keyed hash (computed once, at the claim)."""

    __slots__ = ("row", "address_key")

    def __init__(self, row: Any, address_key: str | None) -> None:
        self.row = row
        self.address_key = address_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self.row, name)


class RateLimiter:
    """A token bucket shared by a process's senders: at most `per_second` emails a second (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.per_second <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(self._next, now) + 1.0 / self.per_second


class DeliveryWorker:
    """Sends due deliveries over `connections` SMTP connections."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        settings: Settings,
        wake: asyncio.Event,
        *,
        connections: int = 1,
        max_attempts: int = 8,
        poll_interval_s: float = 1.0,
        mailer_factory: Callable[[], Mailer] | None = None,
        batch_size: int = 50,
        lease_s: float = 30.0,
        wording: EmailSettings | None = None,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.uows = UnitsOfWork(db, outbox)
        self.settings = settings
        self.wake = wake
        self.connections = max(1, connections)
        self.max_attempts = max_attempts
        self.poll_interval_s = poll_interval_s
        self.mailer_factory = mailer_factory or (lambda: Mailer(settings))
        self.limiter = RateLimiter(settings.smtp_max_per_second)
        self.suppressions = Suppressions(settings.secret_key)
        self.wording = wording or EmailSettings(settings.network_name)
        self.domain = message_domain(settings.mail_from)
        self.attachments: dict[str, AttachmentProvider] = {}
        self.service = settings.service_name
        # A batch must be sent well within its lease, even at the relay's allowed rate.
        rate = settings.smtp_max_per_second
        self.batch_size = max(1, min(batch_size, int(rate * lease_s / 3))) if rate > 0 else batch_size
        self.lease_s = lease_s
        self._listening = asyncio.Lock()
        # Emails the relay accepted whose records did not commit (record_accepted): by delivery id.
        self._accepted: dict[str, Accepted] = {}
        self._recording = asyncio.Lock()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Let `run` return once every sender has finished the email in hand (the relay's answer to it and its
        record's COMMIT), giving back the rest of its batch: what a stopping service asks (a rolling upgrade's
        SIGTERM). Cancelling a sender instead may cut it between the final '.' and the relay's "250": the relay
        keeps the email, its record rolls back, and the lease sends it a second time."""
        self._stopping.set()
        self.wake.set()

    def attach_for(self, kind: str, provider: AttachmentProvider) -> None:
        self.attachments[kind] = provider

    async def run(self) -> None:
        """Run the senders, and the reaper of expired leases, until cancelled or stopped (`stop`)."""
        reaper = asyncio.ensure_future(self._reaper())
        try:
            await asyncio.gather(*(self._sender(self.mailer_factory()) for _ in range(self.connections)))
        finally:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
        try:
            await self.record_accepted()  # an accepted email whose COMMIT failed: recorded before the process goes
        except Exception as exc:
            log.warning("emails the relay accepted could not be recorded before stopping; their lease sends them "
                        "again", error=repr(exc), emails=len(self._accepted))

    async def _reaper(self) -> None:
        while True:
            try:
                if await self.release_expired_leases():
                    self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("releasing expired delivery leases failed", error=repr(exc))
            await asyncio.sleep(self.lease_s / 4)

    async def _sender(self, mailer: Mailer) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    sent = await self.send_due(mailer)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("delivery pass failed", error=repr(exc))
                    await asyncio.sleep(self.poll_interval_s)
                    sent = 0
                if sent == 0:
                    # One idle sender at a time listens for the wake (and polls): a welcome wakes one sender, not
                    # all of them, each claiming for one row. Senders that find a full batch wake the next one.
                    async with self._listening:
                        if self._stopping.is_set():
                            break
                        try:
                            await asyncio.wait_for(self.wake.wait(), timeout=self.poll_interval_s)
                        except TimeoutError:
                            pass
                        if not self._stopping.is_set():  # left set: every sender waiting here sees the stop
                            self.wake.clear()
        finally:
            await mailer.close()

    async def send_due(self, mailer: Mailer, limit: int = 500) -> int:
        """Claim and send due deliveries in batches; return how many were handled.

        A batch is worked on for at most a third of its lease: what is left then (a slow relay) is given back
        and claimed afresh, so a sender never reaches a delivery whose lease ran out under it (the next batch is
        claimed while one goes out: its lease has run for at most a third when its turn comes, two thirds when it
        is done). Should one still run out, staging a record finds that and drops the email before its '.'."""
        await self.record_accepted()
        handled = 0
        claiming: asyncio.Future[list[Any]] | None = asyncio.ensure_future(self.claim(self.batch_size))
        try:
            while claiming is not None:
                batch = await claiming
                claiming = None
                if not batch:
                    break
                if len(batch) == self.batch_size:
                    self.wake.set()  # probably more due: bring in the next idle sender
                    if handled + len(batch) < limit and not self._stopping.is_set():
                        # The next batch is leased while this one goes out (the claim's round trips and COMMIT
                        # off the sender's path).
                        claiming = asyncio.ensure_future(self.claim(self.batch_size))
                handled += await self._send_batch(mailer, batch)
        finally:
            if claiming is not None:  # leased for nothing (this pass failed or was cancelled): given back
                await asyncio.wait([claiming])
                if not claiming.cancelled() and claiming.exception() is None:
                    await self._release([r.id for r in claiming.result()])
        return handled

    async def _send_batch(self, mailer: Mailer, batch: list[Any]) -> int:
        """Send a leased batch; return how many were handled (what is left once a third of the lease is gone, or
        when the worker is asked to stop, is given back)."""
        handled = 0
        until = time.monotonic() + self.lease_s / 3
        # Two connections for the batch, taking turns: while one commits the record of the email the relay
        # has just accepted, the next email's SMTP commands and its staged record go ahead on the other
        # (no pool checkout, and its pre-ping, per email).
        async with self.db.engine.connect() as first, self.db.engine.connect() as second:
            sessions = (
                AsyncSession(bind=first, expire_on_commit=False),
                AsyncSession(bind=second, expire_on_commit=False),
            )
            records = (await RecordConnection.of(first), await RecordConnection.of(second))
            committing: asyncio.Future[None] | None = None
            try:
                for i, row in enumerate(batch):
                    if self._stopping.is_set() or (i and time.monotonic() > until):
                        await self._release([r.id for r in batch[i:]])
                        break
                    try:
                        # This connection's next email is i + 2: its BEGIN goes with this one's COMMIT.
                        committing = await self._deliver(
                            mailer, row, sessions[i % 2], records[i % 2], committing, begin_next=i + 2 < len(batch)
                        )
                    except BaseException:
                        await self._release([r.id for r in batch[i + 1 :]])
                        raise
                    handled += 1
                if committing is not None:
                    await committing
                    committing = None
            finally:
                if committing is not None:
                    await asyncio.wait([committing])
                for record in records:
                    await record.release()
                for session in sessions:
                    await session.close()
        return handled

    async def claim(self, n: int) -> list[Any]:
        """Lease up to `n` due deliveries to this sender (status 'sending' until the lease ends), and set aside
        in the same transaction those whose address is suppressed for their kind (one query for the batch) and
        fail those without an address (none is queued without one; this keeps a stray row from SMTP)."""
        async with self.db.transaction() as session:
            rows = list((await session.execute(CLAIM_SQL, {"n": n, "lease_s": self.lease_s})).all())
            if not rows:
                return []
            for row in rows:
                if not row.recipient_email:
                    await self._fail(session, row, NO_ADDRESS, row.attempts, permanent=True)
            rows = [row for row in rows if row.recipient_email]
            keys = {row.id: self.suppressions.address_key(row.recipient_email) for row in rows}
            reasons: dict[str, str] = {}
            if keys:
                found = await session.execute(SUPPRESSIONS_SQL, {"keys": list(set(keys.values()))})
                reasons = {email: reason for email, reason in found}
            blocked = [row.id for row in rows if blocks(reasons.get(keys[row.id]), row.kind)]
            if blocked:
                await session.execute(SUPPRESS_CLAIMED_SQL, {"ids": blocked})
            blocked_ids = set(blocked)
            return [Claimed(row, keys[row.id]) for row in rows if row.id not in blocked_ids]

    async def _release(self, ids: list[str]) -> None:
        """Give back, best effort, a batch's deliveries not tried because the batch stopped (otherwise their
        lease runs out and they are due again then)."""
        if not ids:
            return
        try:
            async with self.db.transaction() as session:
                await session.execute(RELEASE_CLAIMED_SQL, {"ids": ids})
        except Exception as exc:
            log.warning("giving back unsent deliveries failed; their lease will run out", error=repr(exc))

    async def release_expired_leases(self) -> int:
        """Deliveries whose sender died are due again: none of them was recorded as sent, so the relay either
        discarded it or (killed in the moment between the relay's "250" and the COMMIT) has a copy already, with
        the same Message-ID (see the module's docstring). Emails this process knows the relay accepted are
        recorded first, so that none of them is made due again."""
        await self.record_accepted()
        async with self.db.transaction() as session:
            result = await session.execute(RELEASE_SQL)
        return int(getattr(result, "rowcount", 0) or 0)

    async def record_accepted(self) -> int:
        """Record as sent the emails the relay accepted whose COMMIT failed (kept in memory until then); raises
        while the database cannot be reached, keeping them. Returns how many were recorded."""
        if not self._accepted:
            return 0
        recorded = 0
        async with self._recording:
            for accepted in list(self._accepted.values()):
                async with self.db.transaction() as session:
                    with self._sent_event(accepted, accepted.sent_at) as event:
                        marked = await session.execute(
                            RECORD_ACCEPTED_SQL,
                            {"id": accepted.id, "attempts": accepted.attempts, "now": accepted.sent_at, **event},
                        )
                        recorded += marked.first() is not None
                del self._accepted[accepted.id]
                metrics.EMAILS_SENT.labels(self.service, accepted.kind).inc()
                log.info("accepted email recorded as sent after its commit failed", delivery_id=accepted.id)
        return recorded

    @contextmanager
    def _sent_event(self, delivery: Any, sent_at: datetime) -> Iterator[dict[str, Any]]:
        """The NotificationSent of `delivery` (a claimed row or an Accepted) as the parameters of its outbox row in
        `_sent_with_its_event`'s statement (within the block: the trace span of its emitting lasts as long)."""
        sent = Envelope.wrap(
            NotificationSent(delivery_id=delivery.id, kind=delivery.kind, recipient_id=delivery.recipient_id,
                             sent_at=sent_at),
            correlation_id=delivery.correlation_id,
        )
        with self.outbox.rows([sent]) as (event,):
            yield {
                "event_id": event["event_id"], "event_type": event["event_type"], "topic": event["topic"],
                "event_key": event["key"], "shard": event["shard"], "payload": event["payload"],
                "headers": json.dumps(event["headers"]),
            }  # fmt: skip

    async def deliver(self, mailer: Mailer, row: Any) -> None:
        """Send one leased delivery; record it as sent once the relay has accepted it.

        `row` comes from `claim` (suppressions already checked for the batch). The record staged before the
        final '.' checks them again, and that the delivery is still this sender's, so an address suppressed, or
        a delivery cancelled (its member erased), while the batch was going out is not emailed either."""
        async with self.db.engine.connect() as conn:
            session = AsyncSession(bind=conn, expire_on_commit=False)
            record = await RecordConnection.of(conn)
            try:
                committing = await self._deliver(mailer, row, session, record, None)
                if committing is not None:
                    await committing
            finally:
                await record.release()
                await session.close()

    async def _deliver(
        self,
        mailer: Mailer,
        row: Any,
        session: AsyncSession,
        record: RecordConnection,
        previous: asyncio.Future[None] | None,
        *,
        begin_next: bool = False,
    ) -> asyncio.Future[None] | None:
        """`deliver`, its record's COMMIT left running (returned) once the relay has accepted: the caller's next
        email goes ahead meanwhile on another connection and passes it back as `previous`. `record` is the
        connection under `session` (the staged record and its COMMIT go straight through it).

        The record is staged while MAIL, RCPT and DATA go out (a database round trip beside the relay's, not
        after them) and must be in place before the final '.'; the previous email's COMMIT must be done by then
        too, so a sender never has more than one email accepted by the relay and not yet recorded (the
        duplicate window of the module's docstring stays one email). `previous` is awaited whatever happens.
        With `begin_next` the COMMIT opens the connection's next transaction in the same message."""
        if not isinstance(row, Claimed):
            row = Claimed(row, self.suppressions.address_key(row.recipient_email) if row.recipient_email else None)
        attempts = row.attempts + 1
        params = {
            "id": row.id,
            "attempts": attempts,
            "key": row.address_key,
            "marketing": row.kind in MARKETING_KINDS,
            "reaches_leavers": row.kind in REACHES_LEAVERS,
            "lease_until": row.lease_until,
        }

        now = datetime.now(UTC)

        async def stage_as_sent() -> None:
            """The record of the email as sent, written (the row locked) but not committed: the relay has the
            whole message before it gets its final '.'."""
            with self._sent_event(row, now) as event:
                status = await record.stage({**params, **event, "now": now})
            if status is not None:
                # Suppressed or cancelled since it was claimed, or another sender has it now: abandon this copy
                # before its '.'.
                raise SuppressedMeanwhile(row.id) if status == "suppressed" else LeaseLost(row.id)

        async def before_end() -> None:
            if previous is not None:
                await previous
            assert staging is not None  # started before the mailer calls this
            await staging

        async def commit() -> None:
            try:
                await record.commit(begin_next)
            except BaseException:
                # The relay has the email; its record is recorded when the database answers (record_accepted),
                # not left for the lease to bring back and send a second time.
                self._accepted[row.id] = Accepted(row, attempts, now)
                raise
            metrics.EMAILS_SENT.labels(self.service, row.kind).inc()

        staging: asyncio.Future[None] | None = None
        try:
            try:
                email = await self._prepared(session, row, record)
                await self.limiter.wait()
                staging = asyncio.ensure_future(stage_as_sent())
                await mailer.send(email, before_end=before_end)
            finally:
                # Neither runs on unobserved: the session is used again below, and a failed COMMIT of the
                # previous email is this pass's failure.
                if staging is not None:
                    await asyncio.wait([staging])
                # Read before the previous COMMIT's failure may be raised: a staging error is always retrieved.
                outcome = staging.exception() if staging is not None and not staging.cancelled() else None
                if previous is not None:
                    await asyncio.wait([previous])
                    previous.result()
                if isinstance(outcome, LeaseLost | SuppressedMeanwhile):
                    raise outcome  # the delivery's own outcome, whatever the relay said meanwhile
            # The relay has accepted: only COMMIT is left (the duplicate window of the module's docstring).
            return asyncio.ensure_future(commit())
        except LeaseLost:
            log.warning("delivery lease lost; left to its new sender", delivery_id=row.id)
        except SuppressedMeanwhile:
            log.info("delivery suppressed or cancelled while its batch was sent", delivery_id=row.id)
        except (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError):
            raise  # the database, not this delivery: the pass fails and its lease brings the delivery back
        except Exception as exc:
            # The relay's answer, an email that cannot be sent, or an error of ours while sending (the mailer
            # has left its connection outside any transaction): recorded on this delivery alone, the staged
            # record (if any) dropped.
            await record.rollback()
            await session.begin()
            await self._record_failure(session, row, exc, attempts)
            await session.commit()
        return None

    async def _prepared(self, session: AsyncSession, row: Any, record: RecordConnection) -> OutgoingEmail:
        """The email of `row`; Unsendable when it cannot be prepared (a database error is raised as it is)."""
        try:
            return await self._email(session, row, record)
        except (SQLAlchemyError, OSError):
            raise
        except Exception as exc:
            raise Unsendable(f"the email could not be prepared ({type(exc).__name__})") from exc

    async def _email(self, session: AsyncSession, row: Any, record: RecordConnection) -> OutgoingEmail:
        """The email of `row`; what it reads from the database (attachments, the wording) through `session`, once
        the transaction `record` opened ahead is ended."""
        headers: dict[str, str] = {}
        if row.kind in MARKETING_KINDS:
            # RFC 8058 one-click unsubscribe, honoured by membership (which owns consent).
            url = tokens.member_link(
                self.settings.secret_key, self.settings.public_base_url, tokens.UNSUBSCRIBE, row.recipient_id
            )
            headers["List-Unsubscribe"] = f"<{url}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if row.reply_to:
            headers["Reply-To"] = row.reply_to
        provider = self.attachments.get(row.kind)
        attachments: list[tuple[str, str, bytes]] = []
        if provider:
            await record.rollback()
            async with session.begin():
                attachments = await provider(session, row)
        wording = self.wording.cached()
        if wording is None:
            await record.rollback()
            async with session.begin():
                wording = await self.wording.load(session)
        return OutgoingEmail(
            to=row.recipient_email,
            subject=one_line(row.subject),
            text=row.body_text,
            html=row.body_html,
            headers=headers,
            attachments=attachments,
            # The same for every attempt: a receiver drops a second copy (see the module's docstring).
            message_id=f"<{row.id}@{self.domain}>",
            return_path=return_path(self.settings.mail_from, row.id),  # VERP: its bounces name it (bounces.py)
            sender=from_header(wording["sender_name"], self.settings.mail_from),
        )

    async def _record_failure(self, session: AsyncSession, row: Any, exc: Exception, attempts: int) -> None:
        """A failed attempt, retried after a backoff until `max_attempts`; failed at once when the relay refused
        the recipient (counted against the address) or the email cannot be sent as it is (not the address's
        fault)."""
        table = tables.deliveries
        known = isinstance(exc, TemporaryFailure | PermanentFailure | Unsendable)
        # An unexpected error's own message may quote an address: only its type is kept (and logged).
        error = without_addresses(str(exc)) if known else f"unexpected error while sending ({type(exc).__name__})"
        if isinstance(exc, PermanentFailure | Unsendable) or attempts >= self.max_attempts:
            await self._fail(
                session,
                row,
                error,
                attempts,
                permanent=isinstance(exc, PermanentFailure | Unsendable),
                refused_by_relay=isinstance(exc, PermanentFailure),
            )
            return
        backoff = timedelta(seconds=min(2**attempts, 3600))
        await session.execute(
            update(table)
            .where(table.c.id == row.id)
            .values(
                status="pending",
                attempts=attempts,
                next_attempt_at=datetime.now(UTC) + backoff,
                last_error=error[:2000],
                lease_until=None,
            )
        )
        metrics.EMAILS_FAILED.labels(self.service, row.kind, "false").inc()
        log.info("delivery deferred", delivery_id=row.id, error=error, retry_in_s=backoff.total_seconds())

    async def _fail(
        self,
        session: AsyncSession,
        row: Any,
        error: str,
        attempts: int,
        *,
        permanent: bool,
        refused_by_relay: bool = False,
    ) -> None:
        table = tables.deliveries
        await session.execute(
            update(table)
            .where(table.c.id == row.id)
            .values(status="failed", attempts=attempts, last_error=error[:2000], lease_until=None)
        )
        await self.uows.over(session, correlation_id=row.correlation_id).emit(
            NotificationFailed(
                delivery_id=row.id, kind=row.kind, recipient_id=row.recipient_id, error=error[:2000],
                permanent=permanent,
            )
        )
        if refused_by_relay and row.recipient_email:
            await self.suppressions.count_hard_failure(
                session, row.recipient_email, self.settings.bounce_suppress_after
            )
        metrics.EMAILS_FAILED.labels(self.service, row.kind, str(permanent).lower()).inc()
        log.warning("delivery failed", delivery_id=row.id, error=error, permanent=permanent)
