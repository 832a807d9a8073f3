"""The events service's tables (its own database): meetings, RSVPs, reminders, and a read model of members."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
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
from shared.ratelimit import rate_limit_tables
from shared.runtime import DeliveryTables

metadata = new_metadata()
delivery = DeliveryTables(metadata)
# One key per RSVP that carries personal fields (see docs/events.md): events is that key's owner.
subject_keys = subject_keys_table(metadata)
# Spam protection of the public forms (shared/ratelimit.py).
rate_limits, trusted_networks, rate_limit_hits = rate_limit_tables(metadata)
# Copies of members' keys (membership.subject-keys): they open the sealed names below; a tombstone destroys one.
member_keys = subject_keys_table(metadata, "member_keys")

# Read model fed by membership's events: who may be invited where, and who a member is at the check-in desk.
# Their name and address are kept only sealed with their key (readable while the copy of the key is here).
members = Table(
    "members",
    metadata,
    Column("member_id", String(36), primary_key=True),
    # Their address's keyed hash (shared/contact.py address_hash): RSVPs made with it are theirs.
    Column("email_hash", String(64), nullable=True, index=True),
    Column("name", JSONB, nullable=True),  # Sealed, with the member's key
    Column("email", JSONB, nullable=True),  # Sealed, with the member's key
    Column("region_id", String(36), nullable=True),
    Column("group_ids", ARRAY(String(36)), nullable=False, server_default=text("'{}'")),
    Column("subteam_ids", ARRAY(String(36)), nullable=False, server_default=text("'{}'")),
    Column("status", String(20), nullable=False, server_default="active"),  # active | left
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Regions, groups and sub-teams as membership defines them: names for the listing, parents for scoping.
units = Table(
    "units",
    metadata,
    Column("unit_id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("parent_id", String(36), nullable=True),
    Column("slug", String(200), nullable=True),
)

meetings = Table(
    "meetings",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("kind", String(20), nullable=False),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=True),
    Column("region_id", String(36), nullable=True, index=True),  # the scope's region, for the public filter
    Column("starts_at", DateTime(timezone=True), nullable=False, index=True),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="Europe/London"),
    Column("venue", String(500), nullable=True),
    Column("online_url", String(1000), nullable=True),  # shown only to people with a place
    Column("capacity", Integer, nullable=True),  # NULL: no limit
    Column("rsvp_deadline", DateTime(timezone=True), nullable=True),
    Column("campaign_id", String(36), nullable=True),
    Column("parent_meeting_id", String(36), ForeignKey("meetings.id"), nullable=True, index=True),
    Column("speakers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("reminder_offsets", ARRAY(Integer), nullable=False, server_default=text("'{1440,60}'")),
    Column("status", String(20), nullable=False, server_default="scheduled"),  # scheduled | cancelled
    Column("sequence", Integer, nullable=False, server_default=text("0")),  # iCalendar SEQUENCE
    # Counters kept under the meeting's row lock: places taken and the last waitlist position handed out.
    Column("going_count", Integer, nullable=False, server_default=text("0")),
    Column("waitlist_last", Integer, nullable=False, server_default=text("0")),
    Column("check_in_code", String(12), nullable=False),
    Column("created_by", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    Column("cancel_reason", Text, nullable=True),
    CheckConstraint("ends_at > starts_at", name="ends_after_start"),
    CheckConstraint("capacity IS NULL OR capacity > 0", name="capacity_positive"),
    # the organisers' list: still to come, then over (migration 0006)
    Index("ix_meetings_ends_at", "ends_at", "starts_at", "id"),
)

rsvps = Table(
    "rsvps",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("meeting_id", String(36), ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False),
    Column("member_id", String(36), nullable=True, index=True),
    # member:<id> or email:<keyed hash>; one RSVP each; indexed to link a new member's earlier RSVPs
    Column("person_ref", String(80), nullable=False, index=True),
    # Kept for the organiser's check-in list; blanked when the person is erased.
    Column("name", String(120), nullable=True),
    Column("email", String(254), nullable=True),
    Column("status", String(20), nullable=False),  # going | waitlisted | cancelled
    Column("waitlist_position", Integer, nullable=True),
    Column("guests", Integer, nullable=False, server_default=text("0")),
    Column("join_network", Boolean, nullable=False, server_default=text("false")),
    Column("source", String(20), nullable=False, server_default="form"),  # form | api | osdi | walk_in
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    Column("attended_at", DateTime(timezone=True), nullable=True),
    Column("attendance_method", String(20), nullable=True),
    UniqueConstraint("meeting_id", "person_ref", name="uq_rsvps_meeting_person"),
    Index("ix_rsvps_meeting_status_position", "meeting_id", "status", "waitlist_position"),
)

reminders = Table(
    "reminders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("meeting_id", String(36), ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False),
    Column("minutes_before", Integer, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False, server_default="pending"),  # pending | published | cancelled
    Column("published_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("meeting_id", "minutes_before", name="uq_reminders_meeting_offset"),
    Index("ix_reminders_due", "due_at", postgresql_where=text("status = 'pending'")),
)
