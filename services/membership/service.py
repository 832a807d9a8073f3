"""Membership's use cases: each is one transaction that writes state and its outbox rows together."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.membership import db as tables
from services.membership.domain import CONSENT_WORDING_VERSION, JoinApplication
from shared.crypto import KeyStore, encode_key
from shared.db import Database
from shared.events.catalog import MemberJoined, MemberProfileUpdated, SubjectKeyIssued
from shared.logging import correlation_id_var
from shared.outbox import Outbox

OWNER = "membership"


@dataclass(frozen=True)
class JoinOutcome:
    member_id: str
    new_member: bool


class MembershipService:
    def __init__(self, db: Database, outbox: Outbox, secret_key: str, double_opt_in: bool = True) -> None:
        self.db = db
        self.outbox = outbox
        self.keys = KeyStore(tables.subject_keys, OWNER)
        self.secret_key = secret_key
        self.double_opt_in = double_opt_in

    def hash_ip(self, ip: str) -> str:
        """Proof of where consent came from, without keeping the address itself."""
        return hmac.new(self.secret_key.encode(), ip.encode(), hashlib.sha256).hexdigest()

    async def join(self, application: JoinApplication, *, ip: str) -> JoinOutcome:
        """Store a new member (or update the existing one with that email) and announce it.

        Joining again never creates a duplicate and never raises a second MemberJoined, even when two
        submissions race: the unique email and ON CONFLICT settle it in the database.
        """
        now = datetime.now(UTC)
        new_id = str(uuid.uuid4())
        m = tables.members
        async with self.db.transaction() as session:
            previous = (
                await session.execute(
                    select(m.c.id, m.c.name, m.c.postcode, m.c.engagement_level, m.c.interests)
                    .where(m.c.email_normalised == application.email_normalised)
                    .with_for_update()
                )
            ).first()
            stmt = (
                pg_insert(m)
                .values(
                    id=new_id,
                    email_normalised=application.email_normalised,
                    name=application.name,
                    postcode=application.postcode,
                    engagement_level=application.engagement_level,
                    interests=application.interests,
                    status="pending" if self.double_opt_in else "confirmed",
                    confirmed_at=None if self.double_opt_in else now,
                    email_consent=application.email_consent,
                    source=application.source,
                    joined_at=now,
                    updated_at=now,
                )
                .on_conflict_do_update(
                    index_elements=[m.c.email_normalised],
                    set_={
                        "name": application.name,
                        "postcode": application.postcode,
                        "engagement_level": application.engagement_level,
                        "interests": application.interests,
                        "updated_at": now,
                    },
                )
                .returning(m.c.id)
            )
            member_id = (await session.execute(stmt)).scalar_one()
            created = member_id == new_id
            await session.execute(
                pg_insert(tables.consent_records).values(
                    id=str(uuid.uuid4()),
                    member_id=member_id,
                    channel="email",
                    granted=application.email_consent,
                    wording_version=CONSENT_WORDING_VERSION,
                    source=application.source,
                    ip_hash=self.hash_ip(ip),
                    recorded_at=now,
                )
            )
            correlation_id = correlation_id_var.get()
            if created:
                key, _ = await self.keys.get_or_create(session, member_id)
                events = [
                    SubjectKeyIssued(key_id=member_id, key=encode_key(key)),
                    MemberJoined(
                        member_id=member_id,
                        email=await self.keys.seal(session, member_id, application.email_normalised),
                        name=await self.keys.seal(session, member_id, application.name),
                        postcode=await self.keys.seal(session, member_id, application.postcode),
                        engagement_level=application.engagement_level,
                        interests=application.interests,
                        email_consent=application.email_consent,
                        consent_wording_version=CONSENT_WORDING_VERSION,
                        source=application.source,
                        confirmation_required=self.double_opt_in,
                        joined_at=now,
                    ),
                ]
            else:
                changed = []
                if previous is not None:
                    if previous.name != application.name:
                        changed.append("name")
                    if previous.postcode != application.postcode:
                        changed.append("postcode")
                    if previous.engagement_level != application.engagement_level:
                        changed.append("engagement_level")
                    if list(previous.interests) != application.interests:
                        changed.append("interests")
                events = []
                if changed:
                    events.append(
                        MemberProfileUpdated(
                            member_id=member_id,
                            changed=changed,
                            name=await self.keys.seal(session, member_id, application.name)
                            if "name" in changed
                            else None,
                            engagement_level=application.engagement_level,
                            interests=application.interests,
                        )
                    )
            await self.outbox.add_events(session, events, correlation_id=correlation_id)
        return JoinOutcome(member_id=member_id, new_member=created)

