"""Notifications' composition root."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifications import db as tables
from services.notifications import osdi
from services.notifications import web as organiser_web
from services.notifications.action_notices import ActionNotices
from services.notifications.activity import ActivityLog
from services.notifications.audiences_web import ROUTERS as AUDIENCE_ROUTERS
from services.notifications.bounces import BounceReceiver, Bounces
from services.notifications.confirmations import ActionConfirmations
from services.notifications.consumers import UseCases, build_registry
from services.notifications.delivery import DeliveryWorker
from services.notifications.digests import DigestLoop, Digests
from services.notifications.fanout import AnnouncementFanOut
from services.notifications.followups import FollowUpLoop, FollowUps
from services.notifications.invitations import Invitations
from services.notifications.letters import LetterNotifications
from services.notifications.mailings import Mailings
from services.notifications.mailings_web import ROUTERS as MAILING_ROUTERS
from services.notifications.meetings import MeetingNotifications
from services.notifications.member_requests import MemberRequestEmails
from services.notifications.organisers import Organisers
from services.notifications.service import NotificationService
from shared import topics
from shared.config import Settings
from shared.osdi import install_error_bodies
from shared.runtime import ServiceRuntime

NAME = "notifications"
# The sender commits one NotificationSent an email: its relay lets a wake gather the next ones for this long, so a
# mailing's events go out a pass (and a Kafka request) every 0.2 s, not one each (docs/benchmarks.md, issue #17).
# Nobody waits on these events for anything but a timeline.
RELAY_GATHER_S = 0.2
RSVP_EMAIL_KINDS = ("rsvp_confirmation", "rsvp_promoted", "meeting_changed", "meeting_cancelled", "reminder")


def digests_and_follow_ups(service: NotificationService) -> tuple[Organisers, Digests, FollowUps]:
    """The organisers' side of the service (also what the command line runs)."""
    organisers = Organisers(service)
    digests = Digests(service, organisers)
    return organisers, digests, FollowUps(service, digests.email_settings)


def create_app(settings: Settings | None = None, *, group_suffix: str = "", loop_interval_s: float = 60.0) -> FastAPI:
    """The service's app. Tests pass their own settings, a suffix giving them consumer groups of their own,
    and a long pause between digest and follow-up passes (they run those passes themselves)."""
    runtime = ServiceRuntime(NAME, tables.delivery, settings, relay_gather_s=RELAY_GATHER_S)
    settings = runtime.settings
    service = NotificationService(runtime.uows, settings)
    meetings = MeetingNotifications(service)
    organisers, digests, follow_ups = digests_and_follow_ups(service)
    use_cases = UseCases(
        service=service,
        meetings=meetings,
        letters=LetterNotifications(service),
        organisers=organisers,
        activity=ActivityLog(),
        follow_ups=follow_ups,
        invitations=Invitations(service),
        member_requests=MemberRequestEmails(service),
        action_notices=ActionNotices(service),
        confirmations=ActionConfirmations(service),
    )
    runtime.add_registry(build_registry(use_cases, group_suffix=group_suffix))
    runtime.document_publisher(topics.NOTIFICATIONS_DELIVERIES, "Notifications sent or failed")
    runtime.document_publisher(topics.NOTIFICATIONS_DIGESTS, "Digests published to organisers")
    runtime.document_publisher(topics.NOTIFICATIONS_MEMBER_DATA, "Emails sent to a member, for their download")

    worker = DeliveryWorker(
        runtime.db,
        runtime.outbox,
        settings,
        service.deliveries_queued,
        connections=settings.smtp_connections,
        lease_s=settings.delivery_lease_seconds,
        wording=service.wording,
    )
    for kind in RSVP_EMAIL_KINDS:
        worker.attach_for(kind, meetings.ics_for_delivery)
    fanout = AnnouncementFanOut(service)
    runtime.add_background(worker.run, stop=worker.stop)
    if settings.bounce_smtp_port:
        runtime.add_background(BounceReceiver(Bounces(runtime.uows, settings)).run)
    runtime.add_background(fanout.run)
    mailings = Mailings(service)
    runtime.add_background(mailings.run)
    runtime.add_background(mailings.audience_index.run)
    runtime.add_background(DigestLoop(digests, loop_interval_s).run)
    runtime.add_background(FollowUpLoop(follow_ups, loop_interval_s).run)

    app = runtime.build_app(
        "Groundswell notifications", routers=(*organiser_web.ROUTERS, *AUDIENCE_ROUTERS, *MAILING_ROUTERS, osdi.router)
    )
    app.state.notifications = service
    app.state.mailings = mailings
    organiser_web.attach(app, organisers, digests, follow_ups)
    install_error_bodies(app)
    return app
