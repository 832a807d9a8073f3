"""The events service's event handlers (its one registry): a read model of members and of the network's units."""

from __future__ import annotations

from services.events import db as tables
from services.events.member_data import answer_member_data
from services.events.members import MemberReadModel
from shared import topics
from shared.events.catalog import (
    ConsentChanged,
    EngagementLevelChosen,
    JoinChangeRequested,
    MemberConfirmed,
    MemberDataReady,
    MemberDataRequested,
    MemberErased,
    MemberJoined,
    MemberLeft,
    MemberProfileUpdated,
    MemberRightsConfirmationRequested,
    OrganisationUnitDefined,
    OrganiserInvited,
    OrganiserSignInLocked,
    RoleGranted,
    SubjectKeyIssued,
)
from shared.events.envelope import Envelope
from shared.handlers import Registry
from shared.revocations import REVOCATION_EVENTS, add_revocation_group
from shared.uow import UnitOfWork

MEMBERS_GROUP = "events.members"
REVOCATIONS_GROUP = "events.revocations"


def build_registry(
    read_model: MemberReadModel, group: str = MEMBERS_GROUP, revocations_group: str = REVOCATIONS_GROUP
) -> Registry:
    registry = Registry("events")
    add_revocation_group(registry, tables.delivery.revocations, revocations_group)
    keys = registry.group(
        f"{group}.keys",
        (topics.MEMBERSHIP_SUBJECT_KEYS,),
        "Copies members' data keys, to read the names and addresses the members mirror keeps sealed (the check-in "
        "desk); a tombstone destroys the copy",
    )

    @keys.on(SubjectKeyIssued)
    async def key_issued(uow: UnitOfWork, envelope: Envelope, event: SubjectKeyIssued) -> None:
        await read_model.keys_issued(uow, [event])

    @keys.on_run(SubjectKeyIssued)
    async def keys_issued(uow: UnitOfWork, run: list[tuple[Envelope, SubjectKeyIssued]]) -> None:
        await read_model.keys_issued(uow, [event for _, event in run])

    @keys.on_tombstone
    async def key_destroyed(uow: UnitOfWork, key: str) -> None:
        await read_model.key_destroyed(uow, key)

    members = registry.group(
        group,
        (topics.MEMBERSHIP_MEMBERS, topics.MEMBERSHIP_ORGANISATION),
        "Who may be invited where (member ids, region, groups), who they are at the check-in desk (sealed), their "
        "address's keyed hash (links their RSVPs: RsvpLinkedToMember) and the network's units; erases on MemberErased",
    )

    async def member_joined(uow: UnitOfWork, envelope: Envelope, event: MemberJoined) -> None:
        await read_model.joined(uow, event)

    async def member_profile_updated(uow: UnitOfWork, envelope: Envelope, event: MemberProfileUpdated) -> None:
        await read_model.profile_updated(uow, event)

    async def member_left(uow: UnitOfWork, envelope: Envelope, event: MemberLeft) -> None:
        await read_model.left(uow, event)

    async def member_erased(uow: UnitOfWork, envelope: Envelope, event: MemberErased) -> None:
        await read_model.erased(uow, event)

    async def unit_defined(uow: UnitOfWork, envelope: Envelope, event: OrganisationUnitDefined) -> None:
        await read_model.unit_defined(uow, event)

    async def member_data_requested(uow: UnitOfWork, envelope: Envelope, event: MemberDataRequested) -> None:
        await answer_member_data(uow, read_model.member_keys, event)

    members.route(
        (MemberJoined, member_joined),
        (MemberProfileUpdated, member_profile_updated),
        (MemberLeft, member_left),
        (MemberErased, member_erased),
        (OrganisationUnitDefined, unit_defined),
        (MemberDataRequested, member_data_requested),
    )
    members.ignore(
        (MemberConfirmed, ConsentChanged, EngagementLevelChosen, RoleGranted, OrganiserInvited, JoinChangeRequested,
         MemberRightsConfirmationRequested, MemberDataReady),
        "who may be invited where depends on membership, region and groups only; consent is notifications' concern",
    )
    members.ignore(REVOCATION_EVENTS, f"copied into the revocation record by {revocations_group}")
    members.ignore((OrganiserSignInLocked,), "notifications emails the organiser; nothing here changes")
    return registry
