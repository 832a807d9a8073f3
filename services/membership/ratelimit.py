"""Rate limits counted in the database, so every instance of the service agrees on them.

A limit (`rate_limits` row: name, max_count, window_s) counts hits per bucket in fixed windows; a bucket
is a keyed hash of what is limited (an IP address, an email address), never the value itself.
Addresses in `trusted_networks` are never limited.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables

JOIN_PER_IP = "join-per-ip"
JOIN_PER_EMAIL = "join-per-email"
SIGNIN_PER_IP = "signin-per-ip"
SIGNIN_PER_ACCOUNT = "signin-per-account"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0


class RateLimiter:
    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(f"rate-limit:{secret_key}".encode()).digest()

    def _bucket(self, limit: str, value: str) -> str:
        return f"{limit}:{hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:40]}"

    async def is_trusted(self, session: AsyncSession, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        for (cidr,) in (await session.execute(select(tables.trusted_networks.c.cidr))).all():
            try:
                if address in ipaddress.ip_network(cidr, strict=False):
                    return True
            except ValueError:
                continue
        return False

    async def hit(self, session: AsyncSession, limit: str, value: str, *, ip: str | None = None) -> Verdict:
        """Count one attempt against `limit` for `value`; allowed while the window's count is within the limit.

        With `ip` given, an attempt from a trusted network is neither counted nor limited.
        """
        if ip is not None and await self.is_trusted(session, ip):
            return Verdict(True)
        config = (
            await session.execute(
                select(tables.rate_limits.c.max_count, tables.rate_limits.c.window_s).where(
                    tables.rate_limits.c.name == limit
                )
            )
        ).first()
        if config is None:
            return Verdict(True)
        now = datetime.now(UTC)
        window = max(int(config.window_s), 1)
        start = datetime.fromtimestamp(int(now.timestamp()) // window * window, UTC)
        h = tables.rate_limit_hits
        hits = (
            await session.execute(
                pg_insert(h)
                .values(bucket=self._bucket(limit, value), window_start=start, hits=1)
                .on_conflict_do_update(index_elements=[h.c.bucket, h.c.window_start], set_={"hits": h.c.hits + 1})
                .returning(h.c.hits)
            )
        ).scalar_one()
        if hits <= config.max_count:
            return Verdict(True)
        return Verdict(False, int((start + timedelta(seconds=window) - now).total_seconds()) + 1)

    @staticmethod
    async def prune(session: AsyncSession, older_than: timedelta = timedelta(days=1)) -> None:
        await session.execute(
            delete(tables.rate_limit_hits).where(tables.rate_limit_hits.c.window_start < datetime.now(UTC) - older_than)
        )
