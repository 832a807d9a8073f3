"""The read model of members and units, fed by membership's events: who may be invited where, who a member is at the
check-in desk, and unit names.

A member's name and address are kept only sealed with their key, and opened with this service's copy of that key
(membership.subject-keys) when an organiser reads them; erasing a member deletes their row and that copy, and
anonymises their RSVPs (the member id stays on them: the place counted as theirs). A member is recognised by their
address's keyed hash (MemberJoined's `email_hash`): RSVPs made with that address, before or after they joined, are
linked to them (RsvpLinkedToMember for those made before).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.events import queries
from services.events.domain import profile_changes
from services.events.queries import utcnow
from shared import topics
from shared.contact import address_ref_of
from shared.crypto import KeyStore, decode_key, unseal_stored
from shared.events import catalog as ev
from shared.events.envelope import Sealed
from shared.uow import UnitOfWork

RSVP_SOURCE = "rsvp:"  # membership marks a join that came from an RSVP form with source "rsvp:<rsvp id>"


@dataclass(frozen=True)
class MemberContact:
    """A member as an organiser at the door sees them."""

    name: str
    email: str


def _sealed(value: Sealed | None) -> dict[str, Any] | None:
    return value.model_dump() if value is not None else None


class MemberReadModel:
    """Event handlers of the events service's consumer groups on membership's topics."""

    def __init__(self, keys: KeyStore, member_keys: KeyStore) -> None:
        self.keys = keys
        self.member_keys = member_keys

    async def joined(self, uow: UnitOfWork, event: ev.MemberJoined) -> None:
        values: dict[str, Any] = {
            "region_id": event.region_id, "group_ids": event.group_ids, "subteam_ids": event.subteam_ids,
            "status": "active", "updated_at": utcnow(), "name": _sealed(event.name), "email": _sealed(event.email)}
        if event.email_hash:
            values["email_hash"] = event.email_hash
        await queries.upsert_member(uow.session, event.member_id, values)
        source_rsvp = event.source.removeprefix(RSVP_SOURCE) if event.source.startswith(RSVP_SOURCE) else None
        await self._link(uow, event.member_id, event.email_hash, source_rsvp)

    async def _link(self, uow: UnitOfWork, member_id: str, email_hash: str | None, rsvp_id: str | None) -> None:
        """RSVPs made with the member's address (or the one they joined from) and not yet theirs are theirs now."""
        refs = [address_ref_of(email_hash)] if email_hash else []
        linked = await queries.link_rsvps_to_member(uow.session, member_id, refs, rsvp_id)
        await uow.emit(*(
            ev.RsvpLinkedToMember(meeting_id=r.meeting_id, rsvp_id=r.id, member_id=member_id,
                                  status=r.status, attended_at=r.attended_at)
            for r in linked
        ))

    async def profile_updated(self, uow: UnitOfWork, event: ev.MemberProfileUpdated) -> None:
        values: dict[str, Any] = {"updated_at": utcnow(), **profile_changes(event)}
        if event.name is not None:
            values["name"] = _sealed(event.name)
        if event.email is not None:
            values["email"] = _sealed(event.email)
        if event.email_hash:
            values["email_hash"] = event.email_hash
        await queries.update_member(uow.session, event.member_id, values)
        if event.email_hash:
            await self._link(uow, event.member_id, event.email_hash, None)

    async def left(self, uow: UnitOfWork, event: ev.MemberLeft) -> None:
        await queries.update_member(uow.session, event.member_id, {"status": "left", "updated_at": utcnow()})

    async def erased(self, uow: UnitOfWork, event: ev.MemberErased) -> None:
        """Forget the member: their read-model row and the copy of their key, their name and email on RSVPs, and
        the keys that sealed those. RSVP rows stay (anonymised, still the member's id) so places add up."""
        await queries.delete_member(uow.session, event.member_id)
        await self.member_keys.destroy(uow.session, event.member_id)
        erased = await queries.anonymise_rsvps_of(uow.session, event.member_id)
        await self.keys.shred(uow.session, erased, uow.outbox, topics.EVENTS_SUBJECT_KEYS)

    async def keys_issued(self, uow: UnitOfWork, keys: Iterable[ev.SubjectKeyIssued]) -> None:
        """Copy members' keys (a key destroyed here is never brought back)."""
        await self.member_keys.put_many(uow.session, {k.key_id: decode_key(k.key) for k in keys})

    async def key_destroyed(self, uow: UnitOfWork, member_id: str) -> None:
        await self.member_keys.destroy(uow.session, member_id)

    async def unit_defined(self, uow: UnitOfWork, event: ev.OrganisationUnitDefined) -> None:
        values = {"kind": event.kind, "name": event.name, "parent_id": event.parent_id, "slug": event.slug}
        await queries.upsert_unit(uow.session, event.unit_id, values)

    # what organisers read ------------------------------------------------------------------------------------
    async def contacts(self, session: AsyncSession, member_ids: Iterable[str]) -> dict[str, MemberContact]:
        """The names and addresses of these members that can be read here (known, and their key not destroyed)."""
        found: dict[str, MemberContact] = {}
        for r in await queries.sealed_members(session, {m for m in member_ids if m}):
            if r.name is None:
                continue
            found[r.member_id] = MemberContact(*unseal_stored(r.key, r.name, r.email or None))
        return found
