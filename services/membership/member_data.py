"""A member's data download gathered from every service, through events (the right of access).

Confirming a download (`/me/confirm`) records a request and publishes MemberDataRequested (ids only). Events,
campaigns and notifications each answer with their part, sealed with the member's key (their copy of it); each part
is kept here as it travelled. Once every part arrived, or once `PART_WAIT` passed (the file then names the services
it still waits on), MemberDataReady asks notifications to email the member a signed, short-lived link to the
download (`/me/download`). The file is assembled when it is fetched: membership's own record as it stands, and the
parts opened with the member's key. An erasure deletes the request and its parts with the member.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership import queries
from services.membership.domain import OWNER
from services.membership.joins import utcnow
from services.membership.member_requests import RequestNotValid
from shared import tokens
from shared.crypto import KeyStore
from shared.events.catalog import MemberDataReady, MemberDataRequested
from shared.events.envelope import Sealed
from shared.logging import get_logger
from shared.uow import UnitOfWork, UnitsOfWork

PART_SERVICES = ("events", "campaigns", "notifications")
PART_WAIT = timedelta(minutes=10)  # after this the link is emailed with what arrived, naming what did not
log = get_logger(__name__)


class MemberData:
    def __init__(self, uows: UnitsOfWork, secret_key: str, public_base_url: str) -> None:
        self.uows = uows
        self.secret_key = secret_key
        self.base_url = public_base_url.rstrip("/")
        self.keys = KeyStore(tables.subject_keys, OWNER)

    async def request(self, member_id: str) -> str:
        """The member confirmed a download: ask every service for its part; returns the request's id."""
        request_id, now = str(uuid.uuid4()), utcnow()
        async with self.uows.begin() as uow:
            await uow.session.execute(
                tables.member_data_requests.insert().values(id=request_id, member_id=member_id, requested_at=now)
            )
            await uow.emit(MemberDataRequested(member_id=member_id, request_id=request_id, requested_at=now))
        return request_id

    async def part_arrived(
        self, uow: UnitOfWork, request_id: str, service: str, part: Sealed | None, note: str | None
    ) -> None:
        """Keep a service's part (the first one, a redelivery changes nothing); the last part sends the link."""
        session = uow.session
        rq = (await session.execute(
            select(tables.member_data_requests).where(tables.member_data_requests.c.id == request_id).with_for_update()
        )).first()
        if rq is None:  # erased since, or not ours
            return
        await session.execute(
            pg_insert(tables.member_data_parts)
            .values(request_id=request_id, service=service, part=part.model_dump() if part else None, note=note)
            .on_conflict_do_nothing()
        )
        if rq.ready_at is None and not await self._missing(session, request_id):
            await self._ready(uow, rq, [])

    async def send_overdue(self, now: datetime | None = None) -> int:
        """Email the link for requests that waited `PART_WAIT` for a part, naming the services still missing."""
        r = tables.member_data_requests
        cutoff = (now or utcnow()) - PART_WAIT
        sent = 0
        async with self.uows.begin() as uow:
            rows = (await uow.session.execute(
                select(r).where(r.c.ready_at.is_(None), r.c.requested_at < cutoff).with_for_update(skip_locked=True)
            )).all()
            for rq in rows:
                await self._ready(uow, rq, await self._missing(uow.session, rq.id))
                sent += 1
        return sent

    async def _missing(self, session: AsyncSession, request_id: str) -> list[str]:
        p = tables.member_data_parts
        arrived = set((await session.execute(select(p.c.service).where(p.c.request_id == request_id))).scalars())
        return [s for s in PART_SERVICES if s not in arrived]

    async def _ready(self, uow: UnitOfWork, rq: Any, waiting_on: list[str]) -> None:
        session = uow.session
        now = utcnow()
        await session.execute(
            update(tables.member_data_requests)
            .where(tables.member_data_requests.c.id == rq.id)
            .values(ready_at=now, waiting_on=waiting_on)
        )
        member = await queries.lock_member(session, rq.member_id)
        if member is None or member.status == "erased" or not member.email_normalised:
            return
        token = tokens.sign(self.secret_key, tokens.MEMBER_DATA, {"r": rq.id})
        link = f"{self.base_url}/me/download?token={token}"
        await uow.emit(
            MemberDataReady(
                member_id=member.id,
                request_id=rq.id,
                email=await self.keys.seal(session, member.id, member.email_normalised),
                name=await self.keys.seal(session, member.id, member.name) if member.name else None,
                confirm_url=await self.keys.seal(session, member.id, link),
                expires_at=now + timedelta(seconds=tokens.MEMBER_DATA_MAX_AGE_S),
                waiting_on=waiting_on,
            )
        )

    async def ready_request(self, token: str) -> tuple[str, str]:
        """The (request id, member id) a download link names, if it is genuine, fresh and its member not erased."""
        try:
            payload = tokens.verify(self.secret_key, tokens.MEMBER_DATA, token, tokens.MEMBER_DATA_MAX_AGE_S)
        except tokens.InvalidToken as exc:
            raise RequestNotValid(str(exc)) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("r"), str):
            raise RequestNotValid("This link is not valid")
        r = tables.member_data_requests
        async with self.uows.begin() as uow:
            rq = (await uow.session.execute(select(r).where(r.c.id == payload["r"], r.c.ready_at.is_not(None)))).first()
        if rq is None:
            raise RequestNotValid()
        return rq.id, rq.member_id

    async def parts(self, request_id: str) -> dict[str, Any]:
        """Each service's part, opened with the member's key, and the services the download still waits on."""
        p = tables.member_data_parts
        found: dict[str, Any] = {}
        async with self.uows.begin() as uow:
            rows = (await uow.session.execute(select(p).where(p.c.request_id == request_id))).all()
            for row in rows:
                sealed = Sealed.model_validate(row.part) if row.part else None
                opened = await self.keys.unseal(uow.session, sealed) if sealed else None
                found[row.service] = json.loads(opened) if opened else {"note": row.note or "nothing held"}
        waiting = [s for s in PART_SERVICES if s not in found]
        return {"parts": found, "waiting_on": waiting}


def download_file(membership: dict[str, Any], gathered: dict[str, Any]) -> dict[str, Any]:
    """The download: membership's record, then every other service's part; services not heard from are named."""
    waiting = gathered["waiting_on"]
    return {
        "about": "Everything the network holds about you, from each of its services.",
        "complete": not waiting,
        "still_waiting_on": waiting,
        "still_waiting_note": (
            f"These services had not answered when this file was made: {', '.join(waiting)}. Ask again later "
            "for a complete file." if waiting else None
        ),
        "membership": membership,
        **{service: gathered["parts"].get(service) for service in PART_SERVICES},
    }
