"""The read model of members and units, fed by membership's events: who may be invited where, and unit names.

No names or addresses are kept here; erasing a member also anonymises their RSVPs and destroys the RSVPs' keys.
"""

from __future__ import annotations

from services.events import queries
from services.events.domain import profile_changes
from services.events.queries import utcnow
from shared import topics
from shared.crypto import KeyStore
from shared.events import catalog as ev
from shared.uow import UnitOfWork

RSVP_SOURCE = "rsvp:"  # membership marks a join that came from an RSVP form with source "rsvp:<rsvp id>"


class MemberReadModel:
    """Event handlers of the events service's consumer group on membership's topics."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def joined(self, uow: UnitOfWork, event: ev.MemberJoined) -> None:
        values = {"region_id": event.region_id, "group_ids": event.group_ids, "subteam_ids": event.subteam_ids,
                  "status": "active", "updated_at": utcnow()}
        await queries.upsert_member(uow.session, event.member_id, values)
        if event.source.startswith(RSVP_SOURCE):
            await queries.link_rsvp_to_member(uow.session, event.source.removeprefix(RSVP_SOURCE), event.member_id)

    async def profile_updated(self, uow: UnitOfWork, event: ev.MemberProfileUpdated) -> None:
        await queries.update_member(uow.session, event.member_id, {"updated_at": utcnow(), **profile_changes(event)})

    async def left(self, uow: UnitOfWork, event: ev.MemberLeft) -> None:
        await queries.update_member(uow.session, event.member_id, {"status": "left", "updated_at": utcnow()})

    async def erased(self, uow: UnitOfWork, event: ev.MemberErased) -> None:
        """Forget the member: their read-model row, their name and email on RSVPs, and the keys that sealed them.

        RSVP rows stay (anonymised) so places and waitlist positions still add up.
        """
        await queries.delete_member(uow.session, event.member_id)
        erased = await queries.anonymise_rsvps_of(uow.session, event.member_id)
        await self.keys.shred(uow.session, erased, uow.outbox, topics.EVENTS_SUBJECT_KEYS)

    async def unit_defined(self, uow: UnitOfWork, event: ev.OrganisationUnitDefined) -> None:
        values = {"kind": event.kind, "name": event.name, "parent_id": event.parent_id, "slug": event.slug}
        await queries.upsert_unit(uow.session, event.unit_id, values)
