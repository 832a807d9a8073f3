"""The campaigns service's composition root: wires the runtime, the service layer and the entrypoints."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.campaigns import api, dashboard, organise, osdi, views, web
from services.campaigns import db as tables
from services.campaigns.actions import ActionsService
from services.campaigns.consumers import ENGAGEMENT_GROUP, REPORTING_GROUP, REVOCATIONS_GROUP, build_registry
from services.campaigns.engagement import EngagementService
from services.campaigns.ladder_moves import LadderMoves
from services.campaigns.letters import MpLetters
from services.campaigns.service import CampaignsService
from shared import topics
from shared.config import Settings
from shared.consumer import EventConsumer
from shared.inbox import Inbox
from shared.osdi import install_error_bodies
from shared.ratelimit import Limits
from shared.runtime import ServiceRuntime
from shared.web import make_templates

NAME = "campaigns"
HERE = Path(__file__).parent


def create_app(
    settings: Settings | None = None,
    *,
    engagement_group: str = ENGAGEMENT_GROUP,
    reporting_group: str = REPORTING_GROUP,
    revocations_group: str = REVOCATIONS_GROUP,
) -> FastAPI:
    """The service's app; tests pass their own settings and consumer groups."""
    runtime = ServiceRuntime(NAME, tables.delivery, settings)
    settings = runtime.settings
    campaigns = CampaignsService(runtime.uows)
    actions = ActionsService(runtime.uows, secret_key=settings.secret_key)
    engagement = EngagementService(runtime.uows, moves=LadderMoves(runtime.uows, chunk=settings.ladder_move_chunk))
    registry = build_registry(campaigns, actions, engagement, engagement_group=engagement_group,
                              reporting_group=reporting_group, revocations_group=revocations_group)
    runtime.add_consumer(EventConsumer(registry[engagement_group]))
    runtime.add_consumer(EventConsumer(registry[revocations_group]))
    runtime.add_consumer(EventConsumer(registry[f"{engagement_group}.keys"]))
    # The read model has an inbox of its own, so a rebuild swaps both in one transaction (rebuild.py).
    runtime.add_consumer(EventConsumer(registry[reporting_group]), Inbox(runtime.db, tables.rpt_inbox))
    runtime.document_publisher(topics.CAMPAIGNS_CAMPAIGNS, "Campaigns launched and closed; asks published")
    runtime.document_publisher(topics.CAMPAIGNS_ACTIONS, "Actions taken on asks; letters to MPs for notifications")
    runtime.document_publisher(topics.CAMPAIGNS_ENGAGEMENT, "Members' engagement levels changing")
    runtime.document_publisher(topics.CAMPAIGNS_SUBJECT_KEYS, "Per-action data keys (compacted; tombstone on erasure)")
    runtime.document_publisher(topics.CAMPAIGNS_MEMBER_DATA, "A member's actions and letters, for their download")
    limits = Limits(runtime.uows, settings.secret_key)
    runtime.add_background(limits.keep_pruned)
    runtime.add_background(engagement.moves.run)  # a saved ladder's members moved in chunks, resumed after a restart
    app = runtime.build_app(
        "Groundswell campaigns",
        routers=[organise.router, dashboard.router, api.router, osdi.router, web.router],
    )
    app.state.campaigns = campaigns
    app.state.actions = actions
    app.state.limits = limits
    app.state.letters = MpLetters(runtime.uows)
    app.state.engagement = engagement
    app.state.templates = make_templates(HERE / "templates", {"network_name": settings.network_name, "service": NAME})
    views.install_filters(app.state.templates)
    install_error_bodies(app)
    return app
