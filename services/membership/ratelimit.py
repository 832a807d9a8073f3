"""Rate limits counted in the database, so every instance of the service agrees on them.

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

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables

JOIN_PER_IP = "join-per-ip"
JOIN_PER_EMAIL = "join-per-email"
SIGNIN_PER_IP = "signin-per-ip"
SIGNIN_PER_ACCOUNT = "signin-per-account"
SETTINGS_TTL_S = 5.0


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
        if self._settings is not None and time.monotonic() - self._settings_at < SETTINGS_TTL_S:
            return self._settings
        r = tables.rate_limits
        limits = {
            row.name: (int(row.max_count), max(int(row.window_s), 1))
            for row in (await session.execute(select(r.c.name, r.c.max_count, r.c.window_s))).all()
        }
        trusted = []
        for (cidr,) in (await session.execute(select(tables.trusted_networks.c.cidr))).all():
            try:
                trusted.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                continue
        self._settings, self._settings_at = LimitSettings(limits, tuple(trusted)), time.monotonic()
        return self._settings

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
        await session.execute(
            delete(tables.rate_limit_hits).where(tables.rate_limit_hits.c.window_start < datetime.now(UTC) - older_than)
        )


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
