"""The privacy notice: organisers of the whole network publish new versions; every version stays readable, since a
member's consent record names the notice in force when they agreed (`consent_records.privacy_version`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select

from services.membership import db as tables
from services.membership.queries import current_privacy_version
from shared.errors import InvalidInput
from shared.uow import UnitsOfWork

MAX_NOTICE = 50_000


@dataclass(frozen=True)
class PrivacyNotice:
    version: int
    body: str
    published_at: datetime

    def blocks(self) -> list[tuple[str, str]]:
        """The body as ("h2" | "p", text) blocks: paragraphs are separated by blank lines, "## " starts a heading."""
        blocks = []
        for chunk in self.body.replace("\r\n", "\n").split("\n\n"):
            text = " ".join(chunk.split())
            if text.startswith("## "):
                blocks.append(("h2", text[3:]))
            elif text:
                blocks.append(("p", text))
        return blocks


class PrivacyNotices:
    def __init__(self, uows: UnitsOfWork) -> None:
        self.uows = uows

    async def notice(self, version: int | None = None) -> PrivacyNotice | None:
        """The notice in force, or an older `version`; None if there is no such version."""
        pn = tables.privacy_notices
        query = select(pn.c.version, pn.c.body, pn.c.published_at)
        query = query.where(pn.c.version == version) if version else query.order_by(pn.c.version.desc()).limit(1)
        async with self.uows.begin() as uow:
            row = (await uow.session.execute(query)).first()
        return PrivacyNotice(row.version, row.body, row.published_at) if row else None

    async def versions(self) -> list[tuple[int, datetime]]:
        """Every version published, newest first, with when."""
        pn = tables.privacy_notices
        async with self.uows.begin() as uow:
            rows = await uow.session.execute(select(pn.c.version, pn.c.published_at).order_by(pn.c.version.desc()))
            return [(r.version, r.published_at) for r in rows]

    async def publish(self, body: str, *, actor: str) -> int:
        """A new version of the notice, in force from now; returns its number."""
        body = body.strip()
        if not body or len(body) > MAX_NOTICE:
            raise InvalidInput({"body": f"Write the notice, up to {MAX_NOTICE:,} characters"})
        pn = tables.privacy_notices
        async with self.uows.begin() as uow:
            session = uow.session
            await session.execute(select(func.pg_advisory_xact_lock(7_301_016)))  # one new version at a time
            version = ((await current_privacy_version(session)) or 0) + 1
            await session.execute(insert(pn).values(version=version, body=body, published_by=actor))
            await session.execute(
                insert(tables.audit_log).values(actor=actor, action="privacy.published", detail={"version": version})
            )
        return version
