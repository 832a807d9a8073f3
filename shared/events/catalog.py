"""Every event type in the system, one pydantic model per type and version.

Within a version, changes are additive only (new optional fields); `tests/contracts` compares these
models with the JSON Schemas committed in `shared/events/schemas/` and fails on anything else.
Personal data travels only as `Sealed` values; everything else is ids and facts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from shared import topics
from shared.events.envelope import EventData, Sealed

ScopeType = Literal["network", "region", "group", "subteam"]
MeetingKind = Literal["in_person", "online", "hybrid"]
AskKind = Literal["petition", "pledge", "write_to_mp", "attend", "share"]


class _MemberEvent(EventData):
    topic = topics.MEMBERSHIP_MEMBERS
    source_service = "membership"
    member_id: str

    def subject(self) -> str:
        return self.member_id


class MemberJoined(_MemberEvent):
    event_type = "MemberJoined"
    email: Sealed
    name: Sealed
    postcode: Sealed | None = None
    region_id: str | None = None
    group_ids: list[str] = []
    suggested_group_id: str | None = None
    subteam_ids: list[str] = []
    interests: list[str] = []
    engagement_level: str
    organisation_id: str | None = None
    email_consent: bool
    consent_wording_version: str
    source: str
    confirmation_required: bool
    joined_at: datetime
    email_hash: str | None = Field(
        default=None,
        description="keyed hash of the normalised address (shared/contact.py address_hash), so other services link "
        "what was done with this address to the member without holding the address",
    )


class MemberConfirmed(_MemberEvent):
    event_type = "MemberConfirmed"
    confirmed_at: datetime


class MemberProfileUpdated(_MemberEvent):
    event_type = "MemberProfileUpdated"
    changed: list[str]
    name: Sealed | None = None
    email: Sealed | None = None
    region_id: str | None = None
    group_ids: list[str] = []
    subteam_ids: list[str] = []
    interests: list[str] = []
    engagement_level: str | None = None
    organisation_id: str | None = None
    email_hash: str | None = Field(
        default=None,
        description="set when the address changed: its new keyed hash (shared/contact.py address_hash)",
    )


class ConsentChanged(_MemberEvent):
    event_type = "ConsentChanged"
    channel: Literal["email"] = "email"
    granted: bool
    wording_version: str | None = None
    source: str
    topics: list[str] = Field(default=[], description="kinds of email still wanted, when granted")


class EngagementLevelChosen(_MemberEvent):
    event_type = "EngagementLevelChosen"
    level: str
    previous_level: str | None = None


class MemberLeft(_MemberEvent):
    event_type = "MemberLeft"
    reason: str | None = Field(
        default=None, description="no longer set (it was free text in clear on a topic kept forever): sealed_reason"
    )
    sealed_reason: Sealed | None = Field(default=None, description="the reason they gave for leaving, if any")


class MemberErased(_MemberEvent):
    event_type = "MemberErased"
    erased_at: datetime


class _MemberRequestEvent(EventData):
    """A request membership recorded for a member and asks them to confirm through a link emailed to them. The
    link is a credential, so it travels sealed with the member's key, like their address and name. On the
    members' topic, so it stays in order with the member's other events (a MemberLeft, a MemberErased)."""

    topic = topics.MEMBERSHIP_MEMBERS
    source_service = "membership"
    member_id: str
    email: Sealed
    name: Sealed | None = None
    confirm_url: Sealed
    expires_at: datetime

    def subject(self) -> str:
        return self.member_id


class JoinChangeRequested(_MemberRequestEvent):
    """Someone joined with the address of a member (or of someone who left): nothing changes until the
    address's owner opens the link and confirms the changes (decision 0006)."""

    event_type = "JoinChangeRequested"
    left: bool = Field(default=False, description="the member had left: confirming brings them back")


class MemberRightsConfirmationRequested(_MemberRequestEvent):
    """A data download or an erasure was asked for through a preferences link: it happens only once confirmed
    through a fresh, short-lived link emailed to the member."""

    event_type = "MemberRightsConfirmationRequested"
    action: Literal["download", "erase"]


class MemberDataRequested(_MemberEvent):
    """A member confirmed they want everything held about them: events, campaigns and notifications each answer
    with their part (EventsDataOfMember, CampaignsDataOfMember, NotificationsDataOfMember). No personal data."""

    event_type = "MemberDataRequested"
    request_id: str
    requested_at: datetime


class MemberDataReady(_MemberRequestEvent):
    """Membership gathered a member's data download (every part, or what arrived before it stopped waiting):
    notifications emails them the link (`confirm_url`, a credential, sealed with the member's key)."""

    event_type = "MemberDataReady"
    request_id: str
    waiting_on: list[str] = Field(default=[], description="services whose part had not arrived when it was sent")


class _MemberDataPart(EventData):
    """One service's part of a member's data download (MemberDataRequested), sealed with the member's key (the
    service's copy of it); no part (`part` empty, `note` says why) when the service cannot read or has nothing."""

    request_id: str
    member_id: str
    part: Sealed | None = Field(default=None, description="a JSON document of what this service holds about them")
    note: str | None = None

    def subject(self) -> str:
        return self.member_id


class EventsDataOfMember(_MemberDataPart):
    """Events' part: the member's RSVPs, waitlist places and attendance."""

    event_type = "EventsDataOfMember"
    topic = topics.EVENTS_MEMBER_DATA
    source_service = "events"


class CampaignsDataOfMember(_MemberDataPart):
    """Campaigns' part: the member's actions, pledges and letters, and their place on the engagement ladder."""

    event_type = "CampaignsDataOfMember"
    topic = topics.CAMPAIGNS_MEMBER_DATA
    source_service = "campaigns"


class NotificationsDataOfMember(_MemberDataPart):
    """Notifications' part: the emails sent to the member with their delivery status, digests if they organise."""

    event_type = "NotificationsDataOfMember"
    topic = topics.NOTIFICATIONS_MEMBER_DATA
    source_service = "notifications"


class _OrganisationEvent(EventData):
    topic = topics.MEMBERSHIP_ORGANISATION
    source_service = "membership"


class OrganisationUnitDefined(_OrganisationEvent):
    """A region, local group, sub-team or partner organisation was created or renamed."""

    event_type = "OrganisationUnitDefined"
    unit_id: str
    kind: Literal["region", "group", "subteam", "partner"]
    name: str
    parent_id: str | None = None
    slug: str | None = None

    def subject(self) -> str:
        return self.unit_id


class RoleGranted(_OrganisationEvent):
    event_type = "RoleGranted"
    organiser_id: str
    member_id: str | None = None
    role: Literal["organiser", "subteam_lead", "constituency_rep"]
    scope_type: ScopeType
    scope_id: str | None = None
    email: Sealed | None = None
    name: Sealed | None = None

    def subject(self) -> str:
        return self.organiser_id


class OrganiserInvited(_OrganisationEvent):
    """Someone was invited to organise: notifications emails them the one-time link to set a password and a
    second factor. The link is a credential, so it travels sealed with the organiser's key."""

    event_type = "OrganiserInvited"
    organiser_id: str
    email: Sealed
    name: Sealed | None = None
    scope_type: ScopeType
    scope_id: str | None = None
    invited_by: str | None = None
    set_password_url: Sealed
    expires_at: datetime

    def subject(self) -> str:
        return self.organiser_id


class ApiKeyRevoked(_OrganisationEvent):
    """An integration's API key was revoked: every service refuses it from now on."""

    event_type = "ApiKeyRevoked"
    key_id: str
    created_by: str | None = None
    revoked_by: str | None = None
    revoked_at: datetime

    def subject(self) -> str:
        return self.key_id


class OrganiserDisabled(_OrganisationEvent):
    """An organiser account was disabled: every service refuses the sessions and API keys it signed or made
    before `disabled_at`, and notifications stops its digests and feed."""

    event_type = "OrganiserDisabled"
    organiser_id: str
    disabled_by: str | None = None
    disabled_at: datetime

    def subject(self) -> str:
        return self.organiser_id


class RoleRevoked(_OrganisationEvent):
    """A role was taken back (named like RoleGranted: `organiser_id` is the holder, a member's id for a member
    without an account): every service refuses the holder's sessions of that scope signed before `revoked_at`
    and the API keys they made, and notifications stops that scope's digest."""

    event_type = "RoleRevoked"
    grant_id: str
    organiser_id: str
    member_id: str | None = None
    role: Literal["organiser", "subteam_lead", "constituency_rep"]
    scope_type: ScopeType
    scope_id: str | None = None
    revoked_by: str | None = None
    revoked_at: datetime

    def subject(self) -> str:
        return self.organiser_id


class OrganiserSignedOut(_OrganisationEvent):
    """An organiser signed out: every service refuses that session (until it would have expired anyway)."""

    event_type = "OrganiserSignedOut"
    organiser_id: str
    session_id: str
    signed_out_at: datetime
    expires_at: datetime

    def subject(self) -> str:
        return self.organiser_id


class OrganiserSignInLocked(_OrganisationEvent):
    """Sign-ins to an organiser's account failed so often that it waits before the next try: notifications
    emails the organiser, once per lockout. The address travels sealed with the organiser's key."""

    event_type = "OrganiserSignInLocked"
    organiser_id: str
    email: Sealed
    name: Sealed | None = None
    failures: int
    locked_until: datetime

    def subject(self) -> str:
        return self.organiser_id


class SubjectKeyIssued(EventData):
    """A data key for one subject's personal fields, on a compacted topic; a tombstone destroys it."""

    event_type = "SubjectKeyIssued"
    topic = topics.MEMBERSHIP_SUBJECT_KEYS
    source_service = "membership"
    key_id: str
    key: str = Field(description="base64 AES-256 key")

    def subject(self) -> str:
        return self.key_id


class _MeetingEvent(EventData):
    topic = topics.EVENTS_MEETINGS
    source_service = "events"
    meeting_id: str

    def subject(self) -> str:
        return self.meeting_id


class Speaker(BaseModel):
    """A speaker in a meeting's or conference's programme."""

    name: str
    title: str | None = None
    session_title: str | None = None


class MeetingScheduled(_MeetingEvent):
    event_type = "MeetingScheduled"
    title: str
    description: str = ""
    kind: MeetingKind
    scope_type: ScopeType
    scope_id: str | None = None
    starts_at: datetime
    ends_at: datetime
    timezone: str = "Europe/London"
    venue: str | None = None
    capacity: int | None = None
    rsvp_deadline: datetime | None = None
    campaign_id: str | None = None
    parent_meeting_id: str | None = None
    speakers: list[Speaker] = []
    public_url: str
    sequence: int = 0


class MeetingUpdated(MeetingScheduled):
    event_type = "MeetingUpdated"
    changed: list[str] = []


class MeetingCancelled(_MeetingEvent):
    event_type = "MeetingCancelled"
    reason: str | None = None
    sequence: int = 0


class MeetingReminderDue(_MeetingEvent):
    event_type = "MeetingReminderDue"
    reminder_id: str
    minutes_before: int
    starts_at: datetime


class _RsvpEvent(EventData):
    topic = topics.EVENTS_RSVPS
    source_service = "events"
    meeting_id: str
    rsvp_id: str

    def subject(self) -> str:
        return self.meeting_id


class RsvpReceived(_RsvpEvent):
    event_type = "RsvpReceived"
    member_id: str | None = None
    status: Literal["going", "waitlisted"]
    waitlist_position: int | None = None
    guests: int = 0
    email: Sealed | None = Field(default=None, description="for someone not yet a member who also joins")
    name: Sealed | None = None
    join_network: bool = False
    postcode: Sealed | None = Field(default=None, description="given when the person also joins the network")
    email_consent: bool = Field(default=False, description="the person agreed to be emailed when joining")


class RsvpRepeated(_RsvpEvent):
    """Someone RSVPed again with the email address of an RSVP that stands. Nothing about it changed, and the page
    they saw said the same as to a first RSVP; notifications emails that RSVP's own address its link (so only
    the address's owner learns of the RSVP). Carries no personal field: notifications knows the RSVP already."""

    event_type = "RsvpRepeated"
    member_id: str | None = None


class RsvpLinkedToMember(_RsvpEvent):
    """An RSVP made with an address before its owner was a member (or before events knew them) is theirs now:
    their member id joined the network with the RSVP's address (MemberJoined's `email_hash`)."""

    event_type = "RsvpLinkedToMember"
    member_id: str
    status: Literal["going", "waitlisted", "cancelled"]
    attended_at: datetime | None = None


class RsvpKeyIssued(EventData):
    """A data key for one RSVP's personal fields (sealed by events), on a compacted topic; a tombstone destroys it."""

    event_type = "RsvpKeyIssued"
    topic = topics.EVENTS_SUBJECT_KEYS
    source_service = "events"
    key_id: str
    key: str = Field(description="base64 AES-256 key")

    def subject(self) -> str:
        return self.key_id


class RsvpCancelled(_RsvpEvent):
    event_type = "RsvpCancelled"
    member_id: str | None = None


class PromotedFromWaitlist(_RsvpEvent):
    event_type = "PromotedFromWaitlist"
    member_id: str | None = None


class AttendanceRecorded(_RsvpEvent):
    event_type = "AttendanceRecorded"
    member_id: str | None = None
    method: Literal["organiser", "self_check_in", "walk_in"]
    attended_at: datetime


class _CampaignEvent(EventData):
    topic = topics.CAMPAIGNS_CAMPAIGNS
    source_service = "campaigns"
    campaign_id: str

    def subject(self) -> str:
        return self.campaign_id


class CampaignLaunched(_CampaignEvent):
    event_type = "CampaignLaunched"
    title: str
    scope_type: ScopeType
    scope_id: str | None = None
    goal: str = ""
    issues: list[str] = []
    partner_ids: list[str] = []


class AskPublished(_CampaignEvent):
    event_type = "AskPublished"
    ask_id: str
    kind: AskKind
    title: str
    target: int | None = None
    meeting_id: str | None = None


class CampaignClosed(_CampaignEvent):
    """A campaign stopped taking actions."""

    event_type = "CampaignClosed"
    closed_at: datetime


class ActionTaken(EventData):
    event_type = "ActionTaken"
    topic = topics.CAMPAIGNS_ACTIONS
    source_service = "campaigns"
    action_id: str
    ask_id: str
    campaign_id: str
    kind: AskKind
    member_id: str | None = None
    region_id: str | None = None
    group_id: str | None = None
    email: Sealed | None = Field(default=None, description="for someone not yet a member who also joins")
    name: Sealed | None = None
    join_network: bool = False
    taken_at: datetime
    postcode: Sealed | None = Field(default=None, description="given when the person also joins the network")
    email_consent: bool = Field(default=False, description="the person agreed to be emailed when joining")

    def subject(self) -> str:
        return self.ask_id


class ActionLinkedToMember(EventData):
    """An action taken with an address before its owner was a member (or before campaigns knew them) is theirs
    now: the ladder, reports and digests count it for `member_id` from here on."""

    event_type = "ActionLinkedToMember"
    topic = topics.CAMPAIGNS_ACTIONS
    source_service = "campaigns"
    action_id: str
    ask_id: str
    campaign_id: str
    kind: AskKind
    member_id: str
    region_id: str | None = None
    group_id: str | None = None
    taken_at: datetime

    def subject(self) -> str:
        return self.ask_id


class ActionKeyIssued(EventData):
    """A data key for one action's personal fields (sealed by campaigns), on a compacted topic; a tombstone
    destroys it."""

    event_type = "ActionKeyIssued"
    topic = topics.CAMPAIGNS_SUBJECT_KEYS
    source_service = "campaigns"
    key_id: str = Field(description="the action id")
    key: str = Field(description="base64 AES-256 key")

    def subject(self) -> str:
        return self.key_id


class MpLetterRequested(EventData):
    """Someone wrote to their MP from a campaign: notifications emails the letter to the MP, a copy to the sender.

    Every field the sender typed is sealed with the action's key (`key_id` = `action_id`, owner `campaigns`).
    """

    event_type = "MpLetterRequested"
    topic = topics.CAMPAIGNS_ACTIONS
    source_service = "campaigns"
    action_id: str
    ask_id: str
    campaign_id: str
    member_id: str | None = None
    constituency_code: str
    constituency_name: str
    mp_name: str
    mp_email: str = Field(description="the MP's public parliamentary address, from the organisers' dataset")
    letter_subject: Sealed
    letter_body: Sealed
    sender_name: Sealed
    sender_email: Sealed = Field(description="Reply-To of the letter and recipient of the copy")
    sender_postcode: Sealed
    copy_to_sender: bool = True
    requested_at: datetime

    def subject(self) -> str:
        return self.action_id


class ActionRepeated(EventData):
    """Someone took an action again (a second signature, pledge or letter) with the email address of one that
    stands. Nothing changed, and the page they saw said the same as to a first time; notifications emails the
    address that took the action (sealed with that action's key, `key_id` = `action_id`, owner `campaigns`)."""

    event_type = "ActionRepeated"
    topic = topics.CAMPAIGNS_ACTIONS
    source_service = "campaigns"
    action_id: str = Field(description="the action that stands")
    ask_id: str
    campaign_id: str
    kind: AskKind
    member_id: str | None = None
    email: Sealed | None = Field(default=None, description="the address that took the action")
    name: Sealed | None = None

    def subject(self) -> str:
        return self.action_id


class MpLetterAwaitingConfirmation(EventData):
    """A letter to an MP waits, unsent, until its writer confirms it from a link emailed to the address they gave
    (so nobody can write to an MP in someone else's name). Published when the letter is written, and again when
    someone writes it again from the same address before it was confirmed. Personal fields sealed with the
    action's key (`key_id` = `action_id`, owner `campaigns`)."""

    event_type = "MpLetterAwaitingConfirmation"
    topic = topics.CAMPAIGNS_ACTIONS
    source_service = "campaigns"
    action_id: str
    ask_id: str
    campaign_id: str
    member_id: str | None = None
    constituency_name: str
    mp_name: str
    sender_name: Sealed
    sender_email: Sealed = Field(description="where the confirmation link goes")
    letter_subject: Sealed

    def subject(self) -> str:
        return self.action_id


class PledgePublished(EventData):
    """An organiser approved a pledge for the campaign's page (once: approving it again publishes nothing). No
    personal data: notifications tells the person who made it, at the address it confirmed the pledge to."""

    event_type = "PledgePublished"
    topic = topics.CAMPAIGNS_ACTIONS
    source_service = "campaigns"
    action_id: str
    ask_id: str
    campaign_id: str
    member_id: str | None = None
    published_at: datetime

    def subject(self) -> str:
        return self.ask_id  # ActionTaken's key: the pledge's confirmation comes first


class EngagementLevelChanged(EventData):
    event_type = "EngagementLevelChanged"
    topic = topics.CAMPAIGNS_ENGAGEMENT
    source_service = "campaigns"
    member_id: str
    level: str
    previous_level: str | None = None
    reason: str = ""

    def subject(self) -> str:
        return self.member_id


class _DeliveryEvent(EventData):
    topic = topics.NOTIFICATIONS_DELIVERIES
    source_service = "notifications"
    delivery_id: str
    kind: str
    recipient_id: str

    def subject(self) -> str:
        return self.recipient_id


class NotificationSent(_DeliveryEvent):
    event_type = "NotificationSent"
    sent_at: datetime


class NotificationFailed(_DeliveryEvent):
    event_type = "NotificationFailed"
    error: str
    permanent: bool


class DigestPublished(EventData):
    event_type = "DigestPublished"
    topic = topics.NOTIFICATIONS_DIGESTS
    source_service = "notifications"
    digest_id: str
    organiser_id: str
    period: Literal["daily", "weekly"]
    scope_type: ScopeType
    scope_id: str | None = None
    entries: int

    def subject(self) -> str:
        return self.organiser_id


EVENT_MODELS: tuple[type[EventData], ...] = (
    MemberJoined,
    MemberConfirmed,
    MemberProfileUpdated,
    ConsentChanged,
    EngagementLevelChosen,
    MemberLeft,
    MemberErased,
    JoinChangeRequested,
    MemberRightsConfirmationRequested,
    MemberDataRequested,
    MemberDataReady,
    EventsDataOfMember,
    CampaignsDataOfMember,
    NotificationsDataOfMember,
    OrganisationUnitDefined,
    RoleGranted,
    OrganiserInvited,
    ApiKeyRevoked,
    OrganiserDisabled,
    RoleRevoked,
    OrganiserSignedOut,
    OrganiserSignInLocked,
    SubjectKeyIssued,
    MeetingScheduled,
    MeetingUpdated,
    MeetingCancelled,
    MeetingReminderDue,
    RsvpReceived,
    RsvpKeyIssued,
    RsvpRepeated,
    RsvpCancelled,
    RsvpLinkedToMember,
    PromotedFromWaitlist,
    AttendanceRecorded,
    CampaignLaunched,
    AskPublished,
    CampaignClosed,
    ActionTaken,
    ActionKeyIssued,
    ActionLinkedToMember,
    MpLetterRequested,
    ActionRepeated,
    MpLetterAwaitingConfirmation,
    PledgePublished,
    EngagementLevelChanged,
    NotificationSent,
    NotificationFailed,
    DigestPublished,
)

_BY_KEY: dict[tuple[str, int], type[EventData]] = {(m.event_type, m.event_version): m for m in EVENT_MODELS}


class UnknownEventType(LookupError):
    pass


def model_for(event_type: str, version: int) -> type[EventData]:
    try:
        return _BY_KEY[(event_type, version)]
    except KeyError:
        raise UnknownEventType(f"no model for event {event_type} v{version}") from None
