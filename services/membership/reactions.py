"""What membership does about other services' events: someone who RSVPed or took an action and asked to join
the network becomes (or is recognised as) a member; the engagement ladder's level is recorded.

The person's details arrive sealed with a key of the RSVP (events) or of the action (campaigns), on those
services' key topics; membership keeps copies in `received_keys`. An event whose key has not arrived yet is
parked until it does; one whose key was destroyed (the person was erased) is dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.membership import db as tables
from services.membership.domain import JoinApplication, place
from services.membership.service import MembershipService, load_join_options, utcnow
from shared.contact import MAX_NAME, UK_POSTCODE_RE, collapse_spaces, is_email, normalise_email, normalise_postcode
from shared.crypto import KeyDestroyed, KeyStore, decode_key
from shared.events.catalog import ActionTaken, EngagementLevelChanged, RsvpReceived
from shared.events.envelope import Envelope, Sealed
from shared.logging import get_logger
from shared.parking import ParkingLot

log = get_logger(__name__)


class Reactions:
    def __init__(self, members: MembershipService) -> None:
        self.members = members
        self.received = KeyStore(tables.received_keys, owner="other services")
        self.parking = ParkingLot(tables.parked_events)

    # keys ----------------------------------------------------------------------------------------
    async def remember_key(self, session: AsyncSession, key_id: str, key_b64: str) -> None:
        """Keep a copy of an RSVP's or action's key, then handle whatever waited for it."""
        await self.parking.lock_subject(session, key_id)
        await self.received.put(session, key_id, decode_key(key_b64))
        for envelope in await self.parking.release(session, key_id):
            await self.dispatch(session, envelope)

    async def forget_key(self, session: AsyncSession, key_id: str) -> None:
        """A tombstone on a key topic: the copy goes too (only keys we hold leave a marker)."""
        if await self.received.get(session, key_id) is not None:
            await self.received.destroy(session, key_id)

    async def dispatch(self, session: AsyncSession, envelope: Envelope) -> None:
        if envelope.type == RsvpReceived.event_type:
            await self.rsvp_received(session, envelope, RsvpReceived.model_validate(envelope.data))
        elif envelope.type == ActionTaken.event_type:
            await self.action_taken(session, envelope, ActionTaken.model_validate(envelope.data))

    # joining from elsewhere ----------------------------------------------------------------------
    async def rsvp_received(self, session: AsyncSession, envelope: Envelope, event: RsvpReceived) -> None:
        if not event.join_network or event.member_id or event.email is None:
            return
        await self._join(
            session,
            envelope,
            key_id=event.rsvp_id,
            source=f"rsvp:{event.rsvp_id}",
            email=event.email,
            name=event.name,
            postcode=event.postcode,
            email_consent=event.email_consent,
            joined_at=envelope.occurred_at,
        )

    async def action_taken(self, session: AsyncSession, envelope: Envelope, event: ActionTaken) -> None:
        if not event.join_network or event.member_id or event.email is None:
            return
        await self._join(
            session,
            envelope,
            key_id=event.action_id,
            source=f"action:{event.action_id}",
            email=event.email,
            name=event.name,
            postcode=event.postcode,
            email_consent=event.email_consent,
            joined_at=envelope.occurred_at,
            region_id=event.region_id,
            group_id=event.group_id,
        )

    async def _join(
        self,
        session: AsyncSession,
        envelope: Envelope,
        *,
        key_id: str,
        source: str,
        email: Sealed,
        name: Sealed | None,
        postcode: Sealed | None,
        email_consent: bool,
        joined_at: datetime,
        region_id: str | None = None,
        group_id: str | None = None,
    ) -> None:
        await self.parking.lock_subject(session, key_id)
        if await self.received.is_destroyed(session, key_id):
            return  # the person was erased before we got here
        if await self.received.get(session, key_id) is None or await self.parking.has_parked(session, key_id):
            await self.parking.park(session, envelope, reason="key not received yet", waits_for=key_id)
            return
        try:
            plain: dict[str, Any] = {
                "email": await self.received.unseal(session, email),
                "name": await self.received.unseal(session, name),
                "postcode": await self.received.unseal(session, postcode),
            }
        except KeyDestroyed:
            return
        address = normalise_email(plain["email"] or "")
        if not is_email(address):
            log.warning("a join from elsewhere had no usable email address; ignored", source=source)
            return
        options = await load_join_options(session)
        code = normalise_postcode(plain["postcode"] or "")
        code = code if UK_POSTCODE_RE.match(code) else ""
        placed_region, nearest = place(code or None, options.postcode_prefixes)
        known_region = options.resolve(options.regions, region_id or "")
        known_group = options.resolve(options.groups, group_id or "")
        application = JoinApplication(
            name=collapse_spaces(plain["name"] or "")[:MAX_NAME],
            email=address,
            postcode=code or None,
            email_consent=email_consent,
            consent_version=options.consent_version,
            engagement_level=options.levels[0].key if options.levels else "informed",
            group_ids=[known_group.id] if known_group else ([nearest] if nearest else []),
            region_id=known_region.id if known_region else placed_region,
            suggested_group_id=nearest,
            source=source,
            replace_profile=False,
        )
        await self.members.join_in(session, application, ip=None)

    # the engagement ladder -----------------------------------------------------------------------
    async def engagement_level_changed(self, session: AsyncSession, event: EngagementLevelChanged) -> None:
        """Record the level campaigns observes (a member's own choice of involvement stays as they chose)."""
        m = tables.members
        await session.execute(
            update(m)
            .where(m.c.id == event.member_id, m.c.status != "erased")
            .values(ladder_level=event.level, ladder_changed_at=utcnow())
        )
