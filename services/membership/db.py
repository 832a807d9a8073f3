"""Membership's tables (its own database) and the queries over them.

Configuration that organisers edit (interests, levels of engagement, consent wordings, the network's
regions, groups, sub-teams and partner organisations, the postcode table, allowed origins, rate limits)
lives in tables too, seeded by migrations, so every instance of the service reads the same.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.crypto import subject_keys_table
from shared.db import new_metadata
from shared.parking import parked_events_table
from shared.ratelimit import rate_limit_tables
from shared.runtime import DeliveryTables

metadata = new_metadata()
delivery = DeliveryTables(metadata)
subject_keys = subject_keys_table(metadata)
parked_events = parked_events_table(metadata)

# Copies of other services' subject keys (events' per-RSVP keys, campaigns' per-action keys), to read what
# someone typed when they asked to join from an RSVP or an action. Same shape as `subject_keys`.
received_keys = Table(
    "received_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("key", LargeBinary, nullable=True),  # NULL once destroyed: the row remembers the erasure
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("destroyed_at", DateTime(timezone=True), nullable=True),
)

# -- the network's shape ---------------------------------------------------------------------------

regions = Table(
    "regions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(80), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

local_groups = Table(
    "local_groups",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(80), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("region_id", String(36), ForeignKey("regions.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

subteams = Table(
    "subteams",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(80), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

partner_organisations = Table(
    "partner_organisations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(80), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Postcode outward codes ("B15") or areas ("B") -> region and the nearest local group; longest match wins.
postcode_districts = Table(
    "postcode_districts",
    metadata,
    Column("prefix", String(8), primary_key=True),
    Column("region_id", String(36), ForeignKey("regions.id", ondelete="CASCADE"), nullable=False),
    Column("group_id", String(36), ForeignKey("local_groups.id", ondelete="SET NULL"), nullable=True),
)

# -- what the join form offers ---------------------------------------------------------------------

interests = Table(
    "interests",
    metadata,
    Column("key", String(60), primary_key=True),
    Column("label", String(200), nullable=False),
    Column("position", Integer, nullable=False, server_default=text("0")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
)

engagement_levels = Table(
    "engagement_levels",
    metadata,
    Column("key", String(40), primary_key=True),
    Column("label", String(200), nullable=False),
    Column("position", Integer, nullable=False, server_default=text("0")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
)

# Every wording a person was ever asked to agree to stays here: a consent record names its version.
consent_wordings = Table(
    "consent_wordings",
    metadata,
    Column("version", String(40), primary_key=True),
    Column("channel", String(20), nullable=False, server_default="email"),
    Column("wording", Text, nullable=False),
    Column("introduced_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("retired_at", DateTime(timezone=True), nullable=True),
)

# Sites that may host the join form and be redirected back to (scheme://host[:port]).
allowed_origins = Table(
    "allowed_origins",
    metadata,
    Column("origin", String(200), primary_key=True),
    Column("note", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# -- members ---------------------------------------------------------------------------------------

members = Table(
    "members",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email_normalised", String(254), nullable=True, unique=True),  # NULL once erased
    Column("name", String(120), nullable=False),  # the display name the rest of the system uses
    Column("given_name", String(120), nullable=True),  # as an integration sent them (OSDI); NULL: only `name`
    Column("family_name", String(120), nullable=True),
    Column("phone_number", String(40), nullable=True),
    Column("custom_fields", JSONB, nullable=False, server_default=text("'{}'::jsonb")),  # an integration's own
    Column("postcode", String(10), nullable=True),
    Column("region_id", String(36), nullable=True),
    Column("suggested_group_id", String(36), nullable=True),
    Column("engagement_level", String(40), nullable=False),
    Column("interests", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("skills", Text, nullable=True),
    Column("time_available", String(200), nullable=True),
    Column("organisation_id", String(36), nullable=True),
    Column("organisation_name", String(200), nullable=True),
    Column("status", String(20), nullable=False, server_default="pending"),  # pending confirmed left erased
    Column("email_consent", Boolean, nullable=False),
    Column("email_topics", ARRAY(Text), nullable=True),  # kinds of email wanted; NULL: every kind
    Column("source", String(500), nullable=False),
    Column("ladder_level", String(40), nullable=True),  # what campaigns observes (EngagementLevelChanged)
    Column("ladder_changed_at", DateTime(timezone=True), nullable=True),
    Column("joined_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
    Column("left_at", DateTime(timezone=True), nullable=True),
    Column("erased_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Their address's keyed hash is still to be published (members from before MemberJoined carried it:
    # address_hashes.py); new members never are.
    Column("address_hash_due", Boolean, nullable=False, server_default=text("false")),
    Index("ix_members_region_id", "region_id"),
    Index("ix_members_address_hash_due", "id", postgresql_where=text("address_hash_due")),
    # The organisers' member list and the OSDI people collection, newest first: a page is read from the index
    # instead of sorting every member (migration 0018).
    Index("ix_members_joined_at_id", text("joined_at DESC"), "id"),
    # An OSDI sync's `filter=modified_date gt '…'` and its exact total_records: the members changed since, counted
    # from the index alone instead of every member (migration 0021).
    Index("ix_members_updated_at", "updated_at", postgresql_where=text("status <> 'erased'")),
)

member_groups = Table(
    "member_groups",
    metadata,
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=False),
    Column("group_id", String(36), ForeignKey("local_groups.id", ondelete="CASCADE"), nullable=False),
    Column("joined_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("member_id", "group_id"),
    # A group's members read from the index alone (a group organiser's search checks its scope with them: 0022).
    Index("ix_member_groups_group_id_member_id", "group_id", "member_id"),
)

member_subteams = Table(
    "member_subteams",
    metadata,
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=False),
    Column("subteam_id", String(36), ForeignKey("subteams.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("joined_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("member_id", "subteam_id"),
)

consent_records = Table(
    "consent_records",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("channel", String(20), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("wording_version", String(40), nullable=False),
    Column("source", String(500), nullable=False),
    Column("site", String(200), nullable=True),  # the origin of an embedded form
    Column("ip_hash", String(64), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("privacy_version", Integer, nullable=True),  # the privacy notice in force; NULL before notices
)

# Requests recorded for a member and waiting for them to confirm through a link emailed to them (decision 0006):
# `join-change` (a join for their address: `details` holds the join, its personal fields sealed with the member's
# key), `download` and `erase` (asked for through a preferences link). One of each kind per member: a newer
# request replaces the older, whose link then leads nowhere; a request is deleted once used.
member_requests = Table(
    "member_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("ip_hash", String(64), nullable=True),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    UniqueConstraint("member_id", "kind", name="uq_member_requests_member_id_kind"),
)

# What a join made, for its thank-you page (services/membership/join_followups.py): keyed by a hash of the random
# cookie the join form's page gave that browser, so the page can offer "tell us more" and next steps without the
# answer to the join saying anything. `member_id` and `request_id`: the member the join created, or the request a
# join for a member's address recorded (neither for a join that stored nothing); ids only, no personal data.
join_followups = Table(
    "join_followups",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=True, index=True),
    Column("request_id", String(36), nullable=True),
    Column("new_member", Boolean, nullable=False, server_default=text("false")),
    Column("region_id", String(36), nullable=True),  # where the postcode typed places them
    Column("group_id", String(36), nullable=True),  # the local group nearest that postcode
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("used_at", DateTime(timezone=True), nullable=True),  # "tell us more" was sent (it is taken once)
)

# A member's data download, gathered from every service (services/membership/member_data.py): the request, and
# each service's part as it arrived (sealed with the member's key, as it travelled).
member_data_requests = Table(
    "member_data_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("ready_at", DateTime(timezone=True), nullable=True),  # the link was emailed
    Column("waiting_on", ARRAY(String(40)), nullable=False, server_default=text("'{}'")),
)

member_data_parts = Table(
    "member_data_parts",
    metadata,
    Column(
        "request_id", String(36), ForeignKey("member_data_requests.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("service", String(40), primary_key=True),
    Column("part", JSONB, nullable=True),  # Sealed, with the member's key
    Column("note", Text, nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# -- the public front door -------------------------------------------------------------------------

# Every privacy notice ever published stays readable (`/privacy?version=N`): consent records name theirs.
privacy_notices = Table(
    "privacy_notices",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("body", Text, nullable=False),  # paragraphs separated by blank lines; "## " starts a heading
    Column("published_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_by", String(80), nullable=False, server_default="system"),
)

# What the home page says about the network (one row), edited by network organisers.
network_profile = Table(
    "network_profile",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("description", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_by", String(80), nullable=False, server_default="system"),
)

# Read model of events' public meetings, fed by MeetingScheduled/Updated/Cancelled (topic events.meetings).
public_meetings = Table(
    "public_meetings",
    metadata,
    Column("meeting_id", String(36), primary_key=True),
    Column("title", String(300), nullable=False),
    Column("kind", String(20), nullable=False),  # in_person online hybrid
    Column("venue", String(500), nullable=True),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("timezone", String(60), nullable=False),
    Column("sequence", Integer, nullable=False),  # a late, older change never overwrites a newer one
    Column("cancelled", Boolean, nullable=False, server_default=text("false")),
    # Who it is for (a thank-you page shows the meetings near a new member); NULL for rows from before 0016.
    Column("scope_type", String(20), nullable=True),
    Column("scope_id", String(36), nullable=True),
    Index("ix_public_meetings_starts_at", "starts_at"),
)

# Read model of campaigns' live campaigns, fed by CampaignLaunched/CampaignClosed (topic campaigns.campaigns).
public_campaigns = Table(
    "public_campaigns",
    metadata,
    Column("campaign_id", String(36), primary_key=True),
    Column("title", String(300), nullable=False),
    Column("goal", Text, nullable=False, server_default=""),
    Column("launched_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
)

# -- spam protection -------------------------------------------------------------------------------

rate_limits, trusted_networks, rate_limit_hits = rate_limit_tables(metadata)

# -- the audit trail -------------------------------------------------------------------------------

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(80), nullable=False),  # organiser:<id>, api-key:<id>, member:<id>, system
    Column("action", String(60), nullable=False),
    Column("member_id", String(36), nullable=True, index=True),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

# -- organisers ------------------------------------------------------------------------------------

organisers = Table(
    "organisers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email_normalised", String(254), nullable=False, unique=True),
    Column("name", String(120), nullable=False, server_default=""),
    Column("scope_type", String(20), nullable=False),  # network | region | group | subteam
    Column("scope_id", String(36), nullable=True),
    Column("status", String(20), nullable=False, server_default="invited"),  # invited active disabled
    Column("password_hash", Text, nullable=True),  # argon2id
    Column("totp_secret", Text, nullable=True),  # sealed with a key derived from SECRET_KEY
    Column("totp_last_step", BigInteger, nullable=False, server_default=text("0")),  # a code is used once
    Column("set_password_nonce", String(64), nullable=True),  # the one-time link's; cleared once used
    Column("invited_by", String(36), nullable=True),
    Column("member_id", String(36), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("activated_at", DateTime(timezone=True), nullable=True),
    Column("last_signed_in_at", DateTime(timezone=True), nullable=True),
)

signin_backoff = Table(
    "signin_backoff",
    metadata,
    # Wrong sign-ins in a row per account (a keyed hash of the address, whether or not the account exists).
    Column("bucket", String(80), primary_key=True),
    Column("failures", Integer, nullable=False, server_default=text("0")),
    Column("last_failure_at", DateTime(timezone=True), nullable=True),
    Column("locked_until", DateTime(timezone=True), nullable=True),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("organiser_id", String(36), ForeignKey("organisers.id", ondelete="CASCADE"), nullable=False),
    Column("code_hash", String(64), nullable=False),  # HMAC-SHA256: the codes are long and random
    Column("used_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("organiser_id", "code_hash"),
)

role_grants = Table(
    "role_grants",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("role", String(30), nullable=False),  # organiser subteam_lead constituency_rep
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=True, index=True),
    Column("organiser_id", String(36), ForeignKey("organisers.id", ondelete="CASCADE"), nullable=True),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=True),
    Column("granted_by", String(36), nullable=True),
    Column("granted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=True),
    Column("created_by", String(36), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# -- tags, for integrations (OSDI tags and taggings) -----------------------------------------------

tags = Table(
    "tags",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("created_by", String(80), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

taggings = Table(
    "taggings",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tag_id", String(36), ForeignKey("tags.id", ondelete="CASCADE"), nullable=False),
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_by", String(80), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("tag_id", "member_id"),
)

# -- a member's page: what they did across the services, and organisers' notes ---------------------------

# Read model of what a member did elsewhere (RSVPs, attendance, actions, emails sent to them), fed by events'
# `events.rsvps`, campaigns' `campaigns.actions` and notifications' `notifications.deliveries`. No personal data:
# the kind of thing, when, the meeting or campaign it was about (titles come from `public_meetings` and
# `public_campaigns`) and a word of detail (an RSVP's status, an ask's kind, an email's kind). `ref_id` is the
# RSVP, action or delivery, so a redelivered event adds nothing.
member_activity = Table(
    "member_activity",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(30), nullable=False),  # rsvp rsvp_cancelled attended action email_sent email_failed
    Column("ref_id", String(36), nullable=False),
    Column("subject_id", String(36), nullable=True),  # the meeting or campaign
    Column("detail", String(40), nullable=False, server_default=""),
    Column("at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("kind", "ref_id", name="uq_member_activity_kind_ref_id"),
)

# What organisers note about a member; the text is sealed with the member's key, so erasure shreds it.
member_notes = Table(
    "member_notes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("member_id", String(36), ForeignKey("members.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("author_id", String(36), nullable=False),  # the organiser (an organiser id is a member id)
    Column("text", JSONB, nullable=False),  # a Sealed value
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
