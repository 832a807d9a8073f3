"""Membership's composition root: wires the runtime, the service layer and the entrypoints."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI

from services.membership import db as tables
from services.membership import deps, organise, osdi, public, rights, web
from services.membership.accounts import OrganiserAccounts
from services.membership.address_hashes import AddressHashes
from services.membership.batching import JoinBatcher
from services.membership.consumers import (
    ACTIVITY_GROUP,
    MEMBER_DATA_GROUP,
    PUBLIC_GROUP,
    REACTIONS_GROUP,
    build_registry,
)
from services.membership.directory import Directory
from services.membership.front_door import FrontDoor
from services.membership.join_followups import JoinFollowups
from services.membership.join_forms import JoinForms
from services.membership.joins import Joins
from services.membership.member_data import MemberData
from services.membership.member_page import MemberPage
from services.membership.member_rights import MemberRights
from services.membership.origins import AllowedOrigins
from services.membership.privacy import PrivacyNotices
from services.membership.reactions import Reactions
from services.membership.revoking import Revoking, SessionsOfActiveAccounts
from services.membership.roster import Roster
from services.membership.workspace import OrganiserHome
from shared import topics
from shared.config import Settings
from shared.logging import get_logger
from shared.osdi import install_error_bodies
from shared.runtime import ServiceRuntime
from shared.web import make_templates

NAME = "membership"
HERE = Path(__file__).parent
log = get_logger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    reactions_group: str = REACTIONS_GROUP,
    public_group: str = PUBLIC_GROUP,
    activity_group: str = ACTIVITY_GROUP,
    member_data_group: str = MEMBER_DATA_GROUP,
) -> FastAPI:
    """The service's app; tests pass their own settings and consumer groups."""
    runtime = ServiceRuntime(NAME, tables.delivery, settings)
    settings = runtime.settings
    runtime.document_publisher(
        topics.MEMBERSHIP_MEMBERS, "Members joining, confirming, updating, leaving, erased, asked to confirm"
    )
    runtime.document_publisher(topics.MEMBERSHIP_SUBJECT_KEYS, "Per-member data keys (compacted; tombstone on erasure)")
    runtime.document_publisher(topics.MEMBERSHIP_ORGANISATION, "Regions, local groups, sub-teams, partners, roles")
    joins = Joins(
        runtime.uows,
        settings.secret_key,
        double_opt_in=settings.double_opt_in,
        public_base_url=settings.public_base_url,
    )

    async def prune_rate_limits() -> None:
        while True:
            try:
                await joins.prune_rate_limits()
            except Exception as exc:  # the next pass tries again
                log.warning("pruning rate limit counters failed", error=repr(exc))
            await asyncio.sleep(3600)

    runtime.add_background(prune_rate_limits)
    member_data = MemberData(runtime.uows, settings.secret_key, settings.public_base_url)

    async def send_overdue_downloads() -> None:
        while True:
            try:
                await member_data.send_overdue()
            except Exception as exc:  # the next pass tries again
                log.warning("sending overdue data downloads failed", error=repr(exc))
            await asyncio.sleep(settings.member_data_check_seconds)

    runtime.add_background(send_overdue_downloads)
    address_hashes = AddressHashes(runtime.uows, settings.secret_key)

    async def publish_address_hashes() -> None:
        """Once at start-up: members from before MemberJoined carried their address hash (nobody, once done)."""
        try:
            await address_hashes.publish_all()
        except Exception as exc:  # the next start (or the command) finishes it
            log.warning("publishing address hashes failed", error=repr(exc))

    runtime.add_background(publish_address_hashes)
    runtime.add_registry(
        build_registry(Reactions(joins), reactions_group, public_group, activity_group, member_data,
                       member_data_group)
    )
    accounts = OrganiserAccounts(
        runtime.db,
        runtime.outbox,
        secret_key=settings.secret_key,
        public_base_url=settings.public_base_url,
        network_name=settings.network_name,
    )
    # sessions of accounts no longer active are refused with the revocations, in the same statement
    runtime.revocations = SessionsOfActiveAccounts(runtime.db, tables.delivery.revocations)
    app = runtime.build_app(
        "Groundswell membership", routers=[public.router, web.router, organise.router, rights.router, osdi.router]
    )
    app.add_exception_handler(deps.SignInNeeded, organise.sign_in_needed)
    app.add_exception_handler(osdi.ApiError, osdi.api_error)
    install_error_bodies(app)
    app.state.joins = joins
    app.state.join_forms = JoinForms(joins, JoinBatcher(joins))
    app.state.join_followups = JoinFollowups(runtime.uows, joins, settings.secret_key)
    app.state.member_rights = MemberRights(runtime.uows, joins.requests, joins.limiter)
    app.state.member_data = member_data
    app.state.origins = AllowedOrigins(runtime.uows)
    app.state.accounts = accounts
    app.state.revoking = Revoking(runtime.uows, accounts)
    app.state.directory = Directory(runtime.uows, accounts, joins.forget_options)
    app.state.roster = Roster(runtime.uows)
    app.state.member_page = MemberPage(runtime.uows)
    app.state.organiser_home = OrganiserHome(
        app.state.roster,
        gateway_url=settings.gateway_internal_url or settings.public_base_url,
        kafka_bootstrap=settings.kafka_bootstrap_servers,
    )
    app.state.front_door = FrontDoor(runtime.uows)
    app.state.privacy_notices = PrivacyNotices(runtime.uows)
    app.state.api_key_revoked = accounts.api_key_revoked
    app.state.templates = make_templates(HERE / "templates", {"network_name": settings.network_name, "service": NAME})
    return app
