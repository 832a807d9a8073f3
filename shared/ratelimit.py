"""Rate limits counted in the database, so every instance of a service agrees on them.

Every service that limits something has the same three tables in its own database (`rate_limit_tables`, made by
its migrations): the limits (`rate_limits`), the networks never limited (`trusted_networks`) and the counters
(`rate_limit_hits`). The client address a limit is keyed on is the one `shared/client_address.py` resolved
(X-Forwarded-For believed only from the trusted proxies).

A limit (`rate_limits` row: name, max_count, window_s) counts hits per bucket in fixed windows and judges an
attempt by a sliding window: the current window's hits plus the previous window's, weighted by how much of the
sliding window still overlaps it (so the limit does not reset at a window's boundary, and no one gets twice the
limit by spreading a burst across one). A bucket is a keyed hash of what is limited (an IP address, an email
address), never the value itself.
Addresses in `trusted_networks` are never limited. The limits' settings and the trusted networks are read
from their tables at most every `SETTINGS_TTL_S` seconds (they change a few times a year; a join checks two
limits), and the counters of several limits are counted in one statement.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    column,
    delete,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from shared.logging import get_logger
from shared.uow import UnitsOfWork

log = get_logger(__name__)

SETTINGS_TTL_S = 5.0


def rate_limit_tables(metadata: MetaData) -> tuple[Table, Table, Table]:
    """A service's `rate_limits`, `trusted_networks` and `rate_limit_hits` tables, in its own metadata."""
    return (
        Table(
            "rate_limits",
            metadata,
            Column("name", String(40), primary_key=True),
            Column("max_count", Integer, nullable=False),
            Column("window_s", Integer, nullable=False),
        ),
        # Networks never rate limited (the operator's own machine, a conference stall's connection): CIDR text.
        Table(
            "trusted_networks",
            metadata,
            Column("cidr", String(50), primary_key=True),
            Column("note", String(200), nullable=False, server_default=""),
        ),
        # Counters per (limit, keyed hash of the IP or email, fixed window): shared by every instance.
        Table(
            "rate_limit_hits",
            metadata,
            Column("bucket", String(120), nullable=False),
            Column("window_start", DateTime(timezone=True), nullable=False),
            Column("hits", Integer, nullable=False, server_default=text("1")),
            PrimaryKeyConstraint("bucket", "window_start"),
            Index("ix_rate_limit_hits_window_start", "window_start"),
        ),
    )


# The same tables as the limiter reads them, whichever service's metadata defined them.
_limits = table("rate_limits", column("name"), column("max_count"), column("window_s"))
_trusted = table("trusted_networks", column("cidr"))
_hits = table("rate_limit_hits", column("window_start"))


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0


# One statement for any number of counters (a multi-row VALUES would be compiled anew for every call): each
# bucket's count in its current window after these hits, and its count in the window before.
_COUNT_HITS = text(
    "WITH t AS (SELECT * FROM unnest(CAST(:buckets AS text[]), CAST(:starts AS timestamptz[]), "
    "CAST(:hits AS int[]), CAST(:previous AS timestamptz[])) AS t(bucket, window_start, hits, previous_start)), "
    "counted AS (INSERT INTO rate_limit_hits (bucket, window_start, hits) "
    "SELECT bucket, window_start, hits FROM t "
    "ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limit_hits.hits + EXCLUDED.hits "
    "RETURNING bucket, hits) "
    "SELECT c.bucket, c.hits, coalesce(p.hits, 0) FROM counted c JOIN t ON t.bucket = c.bucket "
    "LEFT JOIN rate_limit_hits p ON p.bucket = t.bucket AND p.window_start = t.previous_start"
)


@dataclass(frozen=True)
class Attempt:
    """One attempt to count against `limit` for `value`; one from a trusted network (`ip`) is not counted."""

    limit: str
    value: str
    ip: str | None = None


@dataclass(frozen=True)
class LimitSettings:
    limits: dict[str, tuple[int, int]]  # name -> (max_count, window_s)
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class RateLimiter:
    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(f"rate-limit:{secret_key}".encode()).digest()
        self._settings: LimitSettings | None = None
        self._settings_at = float("-inf")

    def _bucket(self, limit: str, value: str) -> str:
        return f"{limit}:{hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:40]}"

    async def settings(self, session: AsyncSession) -> LimitSettings:
        """The limits and trusted networks, read again once they are `SETTINGS_TTL_S` old."""
        if self.fresh and self._settings is not None:
            return self._settings
        r = _limits
        limits = {
            row.name: (int(row.max_count), max(int(row.window_s), 1))
            for row in (await session.execute(select(r.c.name, r.c.max_count, r.c.window_s))).all()
        }
        trusted = []
        for (cidr,) in (await session.execute(select(_trusted.c.cidr))).all():
            try:
                trusted.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                continue
        self._settings, self._settings_at = LimitSettings(limits, tuple(trusted)), time.monotonic()
        return self._settings

    @property
    def fresh(self) -> bool:
        """Whether the settings in hand are recent enough to use without reading them again."""
        return self._settings is not None and time.monotonic() - self._settings_at < SETTINGS_TTL_S

    def known_trusted(self, ip: str) -> bool:
        """Whether `ip` is in a trusted network, by the settings in hand while they are fresh (False otherwise)."""
        return self.fresh and self._settings is not None and self._trusted(self._settings, ip)

    async def hit(self, session: AsyncSession, limit: str, value: str, *, ip: str | None = None) -> Verdict:
        """Count one attempt against `limit` for `value`; allowed while the window's count is within the limit.

        With `ip` given, an attempt from a trusted network is neither counted nor limited.
        """
        return (await self.count(session, [Attempt(limit, value, ip)]))[0]

    async def count(self, session: AsyncSession, attempts: Sequence[Attempt]) -> list[Verdict]:
        """Count attempts in one statement; a verdict for each, as if they had been counted one after another
        in this order (the same bucket may come several times: its k-th attempt is allowed while the count
        before the statement plus k is within the limit)."""
        settings = await self.settings(session)
        now = datetime.now(UTC)
        buckets: list[tuple[str, datetime] | None] = []
        per_bucket: dict[tuple[str, datetime], int] = {}
        for attempt in attempts:
            if attempt.limit not in settings.limits or (attempt.ip is not None and self._trusted(settings, attempt.ip)):
                buckets.append(None)
                continue
            window = settings.limits[attempt.limit][1]
            start = datetime.fromtimestamp(int(now.timestamp()) // window * window, UTC)
            key = (self._bucket(attempt.limit, attempt.value), start)
            buckets.append(key)
            per_bucket[key] = per_bucket.get(key, 0) + 1
        after: dict[str, tuple[int, int]] = {}
        if per_bucket:
            keys = list(per_bucket)
            windows: dict[str, int] = {}
            for attempt, slot in zip(attempts, buckets, strict=True):
                if slot is not None:
                    windows[slot[0]] = settings.limits[attempt.limit][1]
            result = await session.execute(
                _COUNT_HITS,
                {
                    "buckets": [b for b, _ in keys],
                    "starts": [w for _, w in keys],
                    "hits": list(per_bucket.values()),
                    "previous": [w - timedelta(seconds=windows[b]) for b, w in keys],
                },
            )
            after = {bucket: (int(hits), int(previous)) for bucket, hits, previous in result.all()}
        seen: dict[tuple[str, datetime], int] = {}
        verdicts = []
        for attempt, slot in zip(attempts, buckets, strict=True):
            if slot is None:
                verdicts.append(Verdict(True))
                continue
            seen[slot] = seen.get(slot, 0) + 1
            hits, previous = after[slot[0]]
            count = hits - per_bucket[slot] + seen[slot]
            max_count, window = settings.limits[attempt.limit]
            verdicts.append(_judge(count, previous, max_count, window, (now - slot[1]).total_seconds()))
        return verdicts

    @staticmethod
    def _trusted(settings: LimitSettings, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in settings.trusted)

    @staticmethod
    async def prune(session: AsyncSession, older_than: timedelta = timedelta(days=1)) -> None:
        await session.execute(delete(_hits).where(_hits.c.window_start < datetime.now(UTC) - older_than))


class RateLimited(Exception):  # noqa: N818 (it reads as what happened: the request was rate limited)
    """Too many attempts from one client address: answered 429 with a page that says when to try again
    (`shared/web.add_error_pages`)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limited; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Limits:
    """A service's limits, counted in a transaction of their own (committed whatever the request then does, so a
    burst of failing attempts is counted too)."""

    def __init__(self, uows: UnitsOfWork, secret_key: str) -> None:
        self.uows = uows
        self.limiter = RateLimiter(secret_key)
        self._reading = asyncio.Lock()

    async def check(self, ip: str, per_ip: Sequence[str], per_address: Sequence[tuple[str, str]] = ()) -> bool:
        """Count an attempt from client address `ip` against each limit of `per_ip`, and against each (limit,
        email address) of `per_address`; nothing is counted for a trusted network.

        Raises RateLimited when a per-IP limit is over. Returns False when a per-address limit is: the caller
        then answers as usual and does nothing (telling the client would reveal that someone else has been
        using that address)."""
        if not self.limiter.fresh:
            async with self._reading:  # one reads the settings; a burst arriving meanwhile waits for them
                if not self.limiter.fresh:
                    async with self.uows.begin() as uow:
                        await self.limiter.settings(uow.session)
        if self.limiter.known_trusted(ip):
            return True  # nothing to count: no transaction (a trusted network's signup stall, the tests)
        attempts = [Attempt(name, ip, ip) for name in per_ip]
        attempts += [Attempt(name, value, ip) for name, value in per_address]
        async with self.uows.begin() as uow:
            verdicts = await self.limiter.count(uow.session, attempts)
        refused = [v.retry_after_s for v in verdicts[: len(per_ip)] if not v.allowed]
        if refused:
            raise RateLimited(max(refused))
        return all(v.allowed for v in verdicts[len(per_ip):])

    async def prune(self) -> None:
        async with self.uows.begin() as uow:
            await RateLimiter.prune(uow.session)

    async def keep_pruned(self, interval_s: float = 3600.0) -> None:
        """A background loop: drop counters older than a day, every `interval_s`."""
        while True:
            try:
                await self.prune()
            except Exception as exc:  # the next pass tries again
                log.warning("pruning rate limit counters failed", error=repr(exc))
            await asyncio.sleep(interval_s)


def _judge(count: int, previous: int, max_count: int, window: int, elapsed: float) -> Verdict:
    """Allowed while `count` (this window's hits, this one included) plus `previous` (the window before's) weighted
    by the share of the sliding window still over it stays within `max_count`; otherwise when to try again."""
    overlap = max(0.0, 1.0 - elapsed / window)
    if count + previous * overlap <= max_count:
        return Verdict(True)
    if count >= max_count:
        # This window alone is at the limit: into the next one, until this one's weight has dropped enough.
        wait = window - elapsed + window * max(0.0, 1.0 - (max_count - 1) / count)
    else:  # until the previous window's weight has dropped enough
        wait = window * (1.0 - (max_count - count) / previous) - elapsed
    return Verdict(False, max(1, int(wait) + 1))


# The operator's own machine (the demo loader, tests behind the local gateway) is never limited.
LOOPBACK: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "this machine (loopback)"),
    ("::1/128", "this machine (loopback)"),
)


def create_tables(op: Any, limits: Sequence[tuple[str, int, int]]) -> None:
    """For a service's migration: its rate limit tables, seeded with `limits` (name, max_count, window_s) and
    the loopback networks."""
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("max_count", sa.Integer(), nullable=False),
        sa.Column("window_s", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rate_limits")),
    )
    op.create_table(
        "trusted_networks",
        sa.Column("cidr", sa.String(length=50), nullable=False),
        sa.Column("note", sa.String(length=200), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("cidr", name=op.f("pk_trusted_networks")),
    )
    op.create_table(
        "rate_limit_hits",
        sa.Column("bucket", sa.String(length=120), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "window_start", name=op.f("pk_rate_limit_hits")),
    )
    op.create_index("ix_rate_limit_hits_window_start", "rate_limit_hits", ["window_start"], unique=False)
    op.bulk_insert(_limits, [{"name": n, "max_count": c, "window_s": w} for n, c, w in limits])
    op.bulk_insert(table("trusted_networks", column("cidr"), column("note")),
                   [{"cidr": c, "note": n} for c, n in LOOPBACK])


def drop_tables(op: Any) -> None:
    op.drop_index("ix_rate_limit_hits_window_start", table_name="rate_limit_hits")
    for name in ("rate_limit_hits", "trusted_networks", "rate_limits"):
        op.drop_table(name)
