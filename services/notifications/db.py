"""Notifications' tables: who may be emailed (a mirror fed by events), and one row per delivery."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime,
    Index,
    Integer,
    SmallInteger,
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
from shared.runtime import DeliveryTables

metadata = new_metadata()
delivery = DeliveryTables(metadata)
subject_keys = subject_keys_table(metadata)
parked_events = parked_events_table(metadata)

# Members a mailing can reach at all: confirmed, an address, a yes to email.
REACHABLE = "email IS NOT NULL AND email_consent AND status = 'confirmed'"
# ...and not on the suppression list: the predicate of the audience indexes and of every audience query.
AUDIENCE = f"{REACHABLE} AND NOT suppressed"
# A member's audience terms (migration 0013): 'unit:<id>' for their region, groups and sub-teams, 'level:<level>',
# 'interest:<interest>', each as its 64-bit hash (hashtextextended(term, 0)), in one generated column.
AUDIENCE_TERMS_SQL = (
    "recipient_audience_terms(region_id::text, group_ids, subteam_ids, engagement_level::text, interests)"
)

recipients = Table(
    "recipients",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("email", String(254), nullable=True),
    Column("name", String(120), nullable=True),
    Column("email_consent", Boolean, nullable=False, server_default=text("false")),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("region_id", String(36), nullable=True),
    Column("engagement_level", String(40), nullable=True),
    Column("group_ids", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("subteam_ids", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    # Kinds of non-transactional email the member still wants; NULL means all of them.
    Column("email_topics", ARRAY(Text), nullable=True),
    Column("interests", ARRAY(Text), nullable=False, server_default=text("'{}'")),  # for mailings' audiences
    Column("joined_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The address as the suppression list keys it (Suppressions.address_key), written with the address: the
    # database keeps `suppressed` from it.
    Column("address_key", String(64), nullable=True),
    # What a mailing's live count needs, narrow enough for one index to hold (migration 0013, by triggers in the
    # database, so every writer keeps them): the address is on the suppression list; the member's last
    # participation (participation.last_at); and the audience terms above.
    Column("suppressed", Boolean, nullable=False, server_default=text("false")),
    Column("took_part_at", DateTime(timezone=True), nullable=True),
    Column("audience_terms", ARRAY(BigInteger), Computed(AUDIENCE_TERMS_SQL, persisted=True)),
    # The audience index's (audience_index.py, migration 0014): the member's number in its bitmaps, from a
    # sequence. Beside it, `audience_xid` (xid8, not declared here: only the database's trigger writes it and only
    # the index's refresh reads it): the transaction that last changed what a count reads.
    Column("audience_no", Integer, nullable=False, server_default=text("nextval('recipients_audience_no_seq')")),
    Index("ix_recipients_address_key", "address_key"),
    # Announcements' audience by region (queries.audience_after).
    Index("ix_recipients_reachable_region", "region_id", "engagement_level", postgresql_where=text(REACHABLE)),
    # A mailing's audience (mailings.audience_conditions): counted by an index-only scan of the first (or of the
    # second, for who took part lately), or through the GIN when a few terms pick out few people.
    Index(
        "ix_recipients_audience",
        "joined_at",
        postgresql_include=["audience_terms", "took_part_at"],
        postgresql_where=text(AUDIENCE),
    ),
    Index(
        "ix_recipients_audience_took_part",
        "took_part_at",
        postgresql_include=["audience_terms"],
        postgresql_where=text(f"{AUDIENCE} AND took_part_at IS NOT NULL"),
    ),
    Index("ix_recipients_audience_terms", "audience_terms", postgresql_using="gin", postgresql_where=text(AUDIENCE)),
    # What the count read before 0013; kept while a release that reads them may still serve (expand only), for a
    # later contract migration to drop.
    Index("ix_recipients_reachable_groups", "group_ids", postgresql_using="gin", postgresql_where=text(REACHABLE)),
    Index("ix_recipients_reachable_subteams", "subteam_ids", postgresql_using="gin", postgresql_where=text(REACHABLE)),
    Index("ix_recipients_reachable_interests", "interests", postgresql_using="gin", postgresql_where=text(REACHABLE)),
)

suppressions = Table(
    "suppressions",
    metadata,
    # An address not to email (see suppression.py); `email` holds a keyed hash of it, never the address.
    Column("email", String(254), primary_key=True),
    Column("reason", String(40), nullable=False),  # unsubscribed, left, erased, hard_bounces
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

address_health = Table(
    "address_health",
    metadata,
    Column("email", String(254), primary_key=True),  # keyed hash, as in suppressions
    Column("hard_failures", Integer, nullable=False, server_default=text("0")),
    Column("last_failure_at", DateTime(timezone=True), nullable=True),
)

meetings = Table(
    "meetings",
    metadata,
    Column("meeting_id", String(36), primary_key=True),
    Column("title", String(300), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("kind", String(20), nullable=False),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=True),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("timezone", String(60), nullable=False),
    Column("venue", Text, nullable=True),
    Column("public_url", Text, nullable=False),
    Column("sequence", Integer, nullable=False, server_default=text("0")),
    Column("status", String(20), nullable=False, server_default="scheduled"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

rsvps = Table(
    "rsvps",
    metadata,
    Column("rsvp_id", String(36), primary_key=True),
    Column("meeting_id", String(36), nullable=False, index=True),
    Column("member_id", String(36), nullable=True, index=True),
    Column("email", String(254), nullable=True),
    Column("name", String(120), nullable=True),
    Column("status", String(20), nullable=False),  # going, waitlisted, cancelled, attended
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

announcements = Table(
    "announcements",
    metadata,
    # One fan-out per meeting announcement; `cursor` is the last member id queued, so a crash resumes there.
    Column("meeting_id", String(36), primary_key=True),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("cursor", String(36), nullable=True),
    Column("queued", Integer, nullable=False, server_default=text("0")),
    Column("correlation_id", String(100), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

participation = Table(
    "participation",
    metadata,
    # Whether a member has taken part (RSVP, attendance, an action): follow-ups skip those who have.
    Column("member_id", String(36), primary_key=True),
    Column("first_at", DateTime(timezone=True), nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=False),
    Column("count", Integer, nullable=False, server_default=text("1")),
)

activity = Table(
    "activity",
    metadata,
    # What happened in the network, by place: the material of organisers' digests.
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("kind", String(40), nullable=False),  # member_joined, meeting_scheduled, action_taken, ...
    Column("occurred_at", DateTime(timezone=True), nullable=False, index=True),
    Column("region_id", String(36), nullable=True),
    Column("group_id", String(36), nullable=True),
    Column("subject_id", String(36), nullable=True),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Index("ix_activity_kind_occurred_at", "kind", "occurred_at"),
    Index("ix_activity_subject_id", "subject_id", "id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("subject_ref", String(80), nullable=False),
    Column("recipient_id", String(36), nullable=False),
    Column("recipient_email", String(254), nullable=True),
    Column("subject", String(300), nullable=False),
    Column("body_text", Text, nullable=False),
    Column("body_html", Text, nullable=True),
    Column("status", String(20), nullable=False, server_default="pending"),
    # 0: a person is waiting for it (welcome, RSVP, invitation); 1: bulk (announcements, follow-ups, digests).
    # Senders take priority 0 first, so a welcome is not queued behind a 100,000-member announcement.
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text, nullable=True),
    Column("correlation_id", String(100), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("reply_to", String(254), nullable=True),  # e.g. a letter to an MP: replies go to its writer
    # While a sender holds a batch: status 'sending' until this time; an expired lease goes back to pending.
    Column("lease_until", DateTime(timezone=True), nullable=True),
    # One delivery per (kind, subject, recipient): a redelivered event or a second instance never sends twice.
    UniqueConstraint("kind", "subject_ref", "recipient_id", name="uq_deliveries_kind_subject_recipient"),
    Index("ix_deliveries_due", "priority", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    Index("ix_deliveries_sending", "lease_until", postgresql_where=text("status = 'sending'")),
    Index("ix_deliveries_recipient", "recipient_id"),
    # The delivery log, newest first (migration 0011).
    Index("ix_deliveries_created_at_id", text("created_at DESC"), "id"),
    # The log's last-seven-days summary: each status's count from the index alone (migration 0015).
    Index("ix_deliveries_status_created_at", "status", "created_at"),
)


# Organisers' digests and follow-ups (digests.py, followups.py, feeds.py, web.py) -------------------------

units = Table(
    "units",
    metadata,
    # The network's regions, local groups and sub-teams by name (OrganisationUnitDefined): digests name places.
    Column("unit_id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("parent_id", String(36), nullable=True, index=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

organisers = Table(
    "organisers",
    metadata,
    # Organisers who get digests (RoleGranted). The address is read once their key is here.
    Column("organiser_id", String(36), primary_key=True),
    Column("member_id", String(36), nullable=True, index=True),
    Column("email", String(254), nullable=True),
    Column("name", String(120), nullable=True),
    Column("digest_period", String(10), nullable=False, server_default="weekly"),  # daily | weekly
    # The secret part of their private Atom feed's address; replacing it revokes the old address.
    Column("feed_token", String(64), nullable=False, unique=True),
    Column("feed_token_created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

digest_subscriptions = Table(
    "digest_subscriptions",
    metadata,
    # One per organiser and scope they were granted: each gets its own digest on the organiser's schedule.
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("organiser_id", String(36), nullable=False, index=True),
    Column("role", String(40), nullable=False),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=False, server_default=""),  # '' for the whole network
    Column("next_digest_at", DateTime(timezone=True), nullable=False, index=True),
    Column("last_digest_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("organiser_id", "scope_type", "scope_id", name="uq_digest_subscriptions_scope"),
)

digests = Table(
    "digests",
    metadata,
    # Each digest built, as sent by email and served in the organiser's Atom feed.
    Column("id", String(36), primary_key=True),
    Column("organiser_id", String(36), nullable=False),
    Column("subscription_id", BigInteger, nullable=False),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=False, server_default=""),
    Column("scope_name", String(200), nullable=False),
    Column("period", String(10), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("title", String(300), nullable=False),
    Column("content", JSONB, nullable=False),
    Column("body_text", Text, nullable=False),
    Column("body_html", Text, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_digests_organiser_created", "organiser_id", "created_at"),
)

follow_up_steps = Table(
    "follow_up_steps",
    metadata,
    # The sequence after joining, editable by organisers: which email goes how many days after a member joins.
    Column("step_key", String(40), primary_key=True),
    Column("position", Integer, nullable=False, server_default=text("0")),
    Column("day_offset", Integer, nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),  # plain text with {placeholders}; paragraphs split by blank lines
    Column("cta_label", String(100), nullable=True),
    Column("cta_url", Text, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

follow_ups = Table(
    "follow_ups",
    metadata,
    # One row per member and step, due at a time: queued once, or skipped with the reason.
    Column("member_id", String(36), primary_key=True),
    Column("step_key", String(40), primary_key=True),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False, server_default="due"),  # due, queued, skipped
    Column("reason", String(60), nullable=True),
    Column("handled_at", DateTime(timezone=True), nullable=True),
    Index("ix_follow_ups_due", "due_at", postgresql_where=text("status = 'due'")),
)

email_settings = Table(
    "email_settings",
    metadata,
    # What organisers edit in emails: the network's name, the sender's name, the sign-off, digest wording.
    Column("key", String(80), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_by", String(36), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# Mailings organisers write (mailings.py) ---------------------------------------------------------------

mailings = Table(
    "mailings",
    metadata,
    # One email an organiser writes to an audience in their scope; sent like an announcement, in batches after
    # `cursor` (a member id), one delivery per member (kind 'mailing', subject_ref the mailing's id).
    Column("id", String(36), primary_key=True),
    Column("organiser_id", String(36), nullable=False),
    Column("scope_type", String(20), nullable=False),  # the writer's scope: who may see and change it
    Column("scope_id", String(36), nullable=True),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),  # Markdown
    Column("audience", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", String(20), nullable=False, server_default="draft"),  # draft, scheduled, sending, sent
    Column("send_at", DateTime(timezone=True), nullable=True),
    Column("cursor", String(36), nullable=True),
    Column("queued", Integer, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_mailings_due", "send_at", postgresql_where=text("status IN ('scheduled', 'sending')")),
)

mailing_links = Table(
    "mailing_links",
    metadata,
    # A link in a mailing, reached through /notifications/r/<signed id>: clicks counted, never who clicked.
    Column("id", String(36), primary_key=True),
    Column("mailing_id", String(36), nullable=False),
    Column("url", Text, nullable=False),
    Column("clicks", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("mailing_id", "url", name="uq_mailing_links_url"),
)

saved_audiences = Table(
    "saved_audiences",
    metadata,
    # An audience an organiser saved under a name to reuse ("saved lists"): seen by organisers of its scope and
    # above it, like the mailings written there.
    Column("id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("organiser_id", String(36), nullable=False),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=True),
    Column("audience", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_saved_audiences_scope", "scope_type", "scope_id"),
)
