"""What membership does about other services' events: someone who RSVPed or took an action and asked to join
the network becomes (or is recognised as) a member; the engagement ladder's level is recorded.

The person's details arrive sealed with a key of the RSVP (events) or of the action (campaigns), on those
services' key topics; membership keeps copies in `received_keys`. An event whose key has not arrived yet is
parked until it does (`remember_key` hands back what waited, for the registry to dispatch); one whose key was
destroyed (the person was erased) is dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.membership import db as tables
from services.membership import queries
from services.membership.domain import JoinApplication, ladder_level, place
from services.membership.joins import Joins, utcnow
from shared.contact import MAX_NAME, UK_POSTCODE_RE, collapse_spaces, is_email, normalise_email, normalise_postcode
from shared.crypto import KeyDestroyed, KeyStore, decode_key
from shared.events.catalog import ActionTaken, EngagementLevelChanged, RsvpReceived
from shared.events.envelope import Envelope, Sealed
from shared.logging import get_logger
from shared.parking import ParkingLot
from shared.uow import UnitOfWork

log = get_logger(__name__)


class Reactions:
    def __init__(self, joins: Joins) -> None:
        self.joins = joins
        self.received = KeyStore(tables.received_keys, owner="other services")
        self.parking = ParkingLot(tables.parked_events)

    # keys ----------------------------------------------------------------------------------------
    async def remember_key(self, uow: UnitOfWork, key_id: str, key_b64: str) -> list[Envelope]:
        """Keep a copy of an RSVP's or action's key; returns the events that waited for it, to handle now."""
        await self.parking.lock_subject(uow.session, key_id)
        await self.received.put(uow.session, key_id, decode_key(key_b64))
        return await self.parking.release(uow.session, key_id)

    async def forget_key(self, uow: UnitOfWork, key_id: str) -> None:
        """A tombstone on a key topic: the copy goes too (only keys we hold leave a marker)."""
        if await self.received.get(uow.session, key_id) is not None:
            await self.received.destroy(uow.session, key_id)

    # joining from elsewhere ----------------------------------------------------------------------
    async def rsvp_received(self, uow: UnitOfWork, envelope: Envelope, event: RsvpReceived) -> None:
        if not event.join_network or event.member_id or event.email is None:
            return
        await self._join(
            uow,
            envelope,
            key_id=event.rsvp_id,
            source=f"rsvp:{event.rsvp_id}",
            email=event.email,
            name=event.name,
            postcode=event.postcode,
            email_consent=event.email_consent,
            joined_at=envelope.occurred_at,
        )

    async def action_taken(self, uow: UnitOfWork, envelope: Envelope, event: ActionTaken) -> None:
        if not event.join_network or event.member_id or event.email is None:
            return
        await self._join(
            uow,
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
        uow: UnitOfWork,
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
        session = uow.session
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
        options = await queries.load_join_options(session)
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
        await self.joins.join_in(uow, application, ip=None)

    # the engagement ladder -----------------------------------------------------------------------
    async def engagement_level_changed(self, uow: UnitOfWork, event: EngagementLevelChanged) -> None:
        """Record the level campaigns observes, as `domain.ladder_level` decides."""
        member = await queries.lock_member(uow.session, event.member_id)
        values = ladder_level(member.status if member else None, event.level, utcnow())
        if values:
            await queries.update_member(uow.session, event.member_id, values)
