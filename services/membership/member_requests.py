"""Requests a member confirms through a link emailed to them (decision 0006): the changes of a join for their
address, and a data download or an erasure asked for through a preferences link.

A request is a row of `member_requests`, one of each kind per member (a newer one replaces the older, whose link
then leads nowhere). Its link is signed (`shared.tokens`, purpose per kind) and names the request's id, so it is
single-use: the row is deleted once the member confirms. Membership seals the link, the address and the name with
the member's key into the event that asks notifications to email it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership.domain import DOWNLOAD, ERASE, JOIN_CHANGE, OWNER, REQUEST_LIFETIME
from shared import tokens
from shared.crypto import KeyStore
from shared.events.catalog import JoinChangeRequested, MemberRightsConfirmationRequested
from shared.events.envelope import EventData

# Each kind's link: the token's purpose, its lifetime, and the page it opens.
PURPOSE = {JOIN_CHANGE: tokens.JOIN_CHANGE, DOWNLOAD: tokens.MEMBER_RIGHTS, ERASE: tokens.MEMBER_RIGHTS}
MAX_AGE_S = {
    JOIN_CHANGE: tokens.JOIN_CHANGE_MAX_AGE_S,
    DOWNLOAD: tokens.MEMBER_RIGHTS_MAX_AGE_S,
    ERASE: tokens.MEMBER_RIGHTS_MAX_AGE_S,
}
PAGE = {JOIN_CHANGE: "/join/changes", DOWNLOAD: "/me/confirm", ERASE: "/me/confirm"}


class RequestNotValid(LookupError):
    """The link is forged, altered, expired, already used, or replaced by a newer request."""

    def __init__(self, reason: str = "This link is not valid any more") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MemberRequest:
    id: str
    member_id: str
    kind: str
    details: dict[str, Any]
    ip_hash: str | None


class MemberRequests:
    def __init__(self, secret_key: str, public_base_url: str) -> None:
        self.secret_key = secret_key
        self.base_url = public_base_url.rstrip("/")
        self.keys = KeyStore(tables.subject_keys, OWNER)

    async def record(
        self,
        session: AsyncSession,
        member: Any,
        kind: str,
        now: datetime,
        *,
        details: dict[str, Any] | None = None,
        ip_hash: str | None = None,
        request_id: str | None = None,
    ) -> EventData:
        """Record a request for `member` (a locked `members` row), replacing any older one of its kind; returns
        the event that asks notifications to email the member its link. `request_id`: the new request's id (a
        fresh one by default; every request has an id of its own, so an older link never names a newer one)."""
        expires_at = now + REQUEST_LIFETIME[kind]
        request_id = request_id or str(uuid.uuid4())
        r = tables.member_requests
        values = {"id": request_id, "details": details or {}, "ip_hash": ip_hash, "requested_at": now}
        stmt = pg_insert(r).values(member_id=member.id, kind=kind, expires_at=expires_at, **values)
        await session.execute(
            stmt.on_conflict_do_update(
                constraint="uq_member_requests_member_id_kind", set_={**values, "expires_at": expires_at}
            )
        )
        token = tokens.sign(self.secret_key, PURPOSE[kind], {"r": request_id})
        link = f"{self.base_url}{PAGE[kind]}?token={token}"
        sealed = {
            "member_id": member.id,
            "email": await self.keys.seal(session, member.id, member.email_normalised),
            "name": await self.keys.seal(session, member.id, member.name) if member.name else None,
            "confirm_url": await self.keys.seal(session, member.id, link),
            "expires_at": expires_at,
        }
        if kind == JOIN_CHANGE:
            return JoinChangeRequested(**sealed, left=member.status == "left")
        return MemberRightsConfirmationRequested(**sealed, action=kind)

    async def find(
        self, session: AsyncSession, token: str, kinds: tuple[str, ...], now: datetime, *, lock: bool = False
    ) -> MemberRequest:
        """The request a link names, if it still stands (`lock`: until the transaction ends, to use it)."""
        purposes = {PURPOSE[k] for k in kinds}
        payload: Any = None
        reason = "This link is not valid"
        for purpose in purposes:
            try:
                payload = tokens.verify(self.secret_key, purpose, token, max(MAX_AGE_S[k] for k in kinds))
                break
            except tokens.InvalidToken as exc:
                reason = str(exc)
        if not isinstance(payload, dict) or not isinstance(payload.get("r"), str):
            raise RequestNotValid(reason if payload is None else "This link is not valid")
        r = tables.member_requests
        query = select(r).where(r.c.id == payload["r"], r.c.kind.in_(kinds), r.c.expires_at > now)
        row = (await session.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            raise RequestNotValid()
        return MemberRequest(row.id, row.member_id, row.kind, dict(row.details), row.ip_hash)

    async def standing(self, session: AsyncSession, request_id: str, member_id: str, kind: str, now: datetime
                       ) -> MemberRequest | None:
        """The request with this id, if it still waits for the member (not used, replaced or expired), locked."""
        r = tables.member_requests
        row = (
            await session.execute(
                select(r)
                .where(r.c.id == request_id, r.c.member_id == member_id, r.c.kind == kind, r.c.expires_at > now)
                .with_for_update()
            )
        ).first()
        return MemberRequest(row.id, row.member_id, row.kind, dict(row.details), row.ip_hash) if row else None

    async def used(self, session: AsyncSession, request: MemberRequest) -> None:
        """The member confirmed: the link leads nowhere any more."""
        await session.execute(delete(tables.member_requests).where(tables.member_requests.c.id == request.id))

    @staticmethod
    async def prune(session: AsyncSession, now: datetime) -> None:
        """Forget expired requests (a join's personal fields with them)."""
        r = tables.member_requests
        await session.execute(delete(r).where(r.c.expires_at <= now))
