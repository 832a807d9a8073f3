"""The campaigns service's tables (its own database).

Three groups: what campaigns owns (campaigns, asks, actions, the MP dataset, the engagement ladder); what it
keeps from other services' events for its own use (members, units, meetings, engagement facts); and the
reporting read model (`rpt_*`), written only by the `campaigns.reporting` consumer and rebuildable from Kafka.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
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
# One key per action that carries personal fields (see docs/campaigns.md): campaigns is that key's owner.
subject_keys = subject_keys_table(metadata)
# Spam protection of the public forms (shared/ratelimit.py).
rate_limits, trusted_networks, rate_limit_hits = rate_limit_tables(metadata)
# Copies of members' keys (membership.subject-keys): they open the sealed names below; a tombstone destroys one.
member_keys = subject_keys_table(metadata, "member_keys")

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("summary", Text, nullable=False, server_default=""),
    Column("goal", Text, nullable=False, server_default=""),
    Column("issues", ARRAY(String(80)), nullable=False, server_default=text("'{}'")),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=True),
    Column("region_id", String(36), nullable=True, index=True),  # the scope's region, for scoping
    Column("partner_ids", ARRAY(String(36)), nullable=False, server_default=text("'{}'")),
    Column("status", String(20), nullable=False, server_default="live"),  # draft | live | closed
    Column("created_by", String(64), nullable=True),
    Column("launched_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("closed_at", DateTime(timezone=True), nullable=True),
)

asks = Table(
    "asks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("campaign_id", String(36), ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(20), nullable=False),  # petition | pledge | write_to_mp | attend | share
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    # the petition's text, the pledge prompt, the letter template or the message to share
    Column("body", Text, nullable=False, server_default=""),
    Column("addressee", String(300), nullable=True),  # the petition's target
    Column("goal", Integer, nullable=True),
    Column("letter_subject", String(200), nullable=True),
    Column("meeting_id", String(36), nullable=True, index=True),
    Column("share_url", String(1000), nullable=True),
    Column("position", Integer, nullable=False, server_default=text("0")),
    Column("status", String(20), nullable=False, server_default="open"),  # open | closed
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

actions = Table(
    "actions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("ask_id", String(36), ForeignKey("asks.id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", String(36), nullable=False, index=True),
    Column("kind", String(20), nullable=False),
    # member:<id> or email:<keyed hash>: one action per person and ask. NULL for anonymous shares. Indexed: a new
    # member's earlier actions are found by their address's hash.
    Column("person_ref", String(80), nullable=True, index=True),
    Column("member_id", String(36), nullable=True, index=True),
    # Kept for the organisers (a petition is handed in with its names); blanked when the person is erased.
    Column("name", String(120), nullable=True),
    Column("email", String(254), nullable=True),
    Column("postcode", String(10), nullable=True),
    Column("comment", Text, nullable=True),
    Column("pledge_text", Text, nullable=True),
    Column("moderation", String(20), nullable=True),  # pledges: pending | approved | rejected
    Column("moderated_by", String(64), nullable=True),
    Column("moderated_at", DateTime(timezone=True), nullable=True),
    Column("constituency_code", String(20), nullable=True),
    Column("mp_name", String(200), nullable=True),
    Column("letter_subject", String(200), nullable=True),
    Column("letter_body", Text, nullable=True),
    # A letter to an MP goes once its writer confirms it from the emailed link; NULL until then (not counted).
    Column("letter_confirmed_at", DateTime(timezone=True), nullable=True),
    Column("channel", String(20), nullable=True),  # shares
    Column("rsvp_id", String(36), nullable=True, index=True),  # attend: the RSVP it came from
    Column("join_network", Boolean, nullable=False, server_default=text("false")),
    Column("source", String(20), nullable=False, server_default="form"),  # form | osdi | meeting
    Column("region_id", String(36), nullable=True),
    Column("group_id", String(36), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("ask_id", "person_ref", name="uq_actions_ask_person"),
    Index("ix_actions_ask_created", "ask_id", "created_at"),
    Index("ix_actions_pending_pledges", "campaign_id", postgresql_where=text("moderation = 'pending'")),
    # The actions counted (actions.COUNTED), per campaign: the campaigns list counts them from the index (0006).
    Index("ix_actions_counted_campaign", "campaign_id",
          postgresql_where=text("kind <> 'write_to_mp' OR letter_confirmed_at IS NOT NULL")),
)

# The MP dataset organisers load (docs/campaigns.md): constituencies and the postcode keys that lead to them.
constituencies = Table(
    "constituencies",
    metadata,
    Column("code", String(20), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("mp_name", String(200), nullable=False),
    Column("mp_party", String(120), nullable=False, server_default=""),
    Column("mp_email", String(254), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

constituency_postcodes = Table(
    "constituency_postcodes",
    metadata,
    Column("postcode_key", String(10), primary_key=True),  # a unit (B1 1AA), sector (B1 1), district (B1) or area (B)
    Column("constituency_code", String(20), ForeignKey("constituencies.code", ondelete="CASCADE"), nullable=False),
)

# The ladder of engagement levels, lowest first; empty means the built-in default.
engagement_ladder = Table(
    "engagement_ladder",
    metadata,
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("level", String(40), nullable=False, unique=True),
    Column("label", String(80), nullable=False),
    Column("min_actions", Integer, nullable=False, server_default=text("0")),
    Column("min_attended", Integer, nullable=False, server_default=text("0")),
    Column("min_total", Integer, nullable=False, server_default=text("0")),
    Column("roles", ARRAY(String(40)), nullable=False, server_default=text("'{}'")),
)

# A saved ladder and the moving of the members to it, done in chunks by the service's background loop
# (ladder_moves.py): `cursor` is the last member id a committed chunk passed; at most one row `moving` at a time.
ladder_changes = Table(
    "ladder_changes",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("ladder", JSONB, nullable=False),  # the rungs saved, lowest first (LadderRung.as_dict)
    Column("status", String(20), nullable=False),  # moving | done | superseded
    Column("expected", Integer, nullable=False),  # members the ladder moved when it was saved
    Column("moved", Integer, nullable=False, server_default=text("0")),
    Column("published", Integer, nullable=False, server_default=text("0")),  # EngagementLevelChanged written
    Column("chunks", Integer, nullable=False, server_default=text("0")),
    Column("cursor", String(36), nullable=True),
    Column("saved_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_ladder_changes_saved_at", "saved_at"),
    Index("ux_ladder_changes_one_moving", text("(true)"), unique=True, postgresql_where=text("status = 'moving'")),
)

# Kept from membership's events (consumer group campaigns.engagement): ids and places; the name and address only
# sealed with the member's key (opened with the copy in member_keys when an organiser reads a list).
members = Table(
    "members",
    metadata,
    Column("member_id", String(36), primary_key=True),
    # Their address's keyed hash (shared/contact.py address_hash): actions taken with it are theirs.
    Column("email_hash", String(64), nullable=True, index=True),
    Column("name", JSONB, nullable=True),  # Sealed, with the member's key
    Column("email", JSONB, nullable=True),  # Sealed, with the member's key
    Column("region_id", String(36), nullable=True, index=True),
    Column("group_ids", ARRAY(String(36)), nullable=False, server_default=text("'{}'")),
    Column("subteam_ids", ARRAY(String(36)), nullable=False, server_default=text("'{}'")),
    Column("status", String(20), nullable=False, server_default="active"),  # active | left
    Column("source", String(500), nullable=True),  # action:<id> / rsvp:<id> when they joined from one
    Column("joined_at", DateTime(timezone=True), nullable=True),
    Column("roles", ARRAY(String(40)), nullable=False, server_default=text("'{}'")),
    Column("actions", Integer, nullable=False, server_default=text("0")),
    Column("attended", Integer, nullable=False, server_default=text("0")),
    Column("level", String(40), nullable=True),
    Column("level_since", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_members_source", "source"),
)

# What counts toward a member's level: each action and each attendance once. A fact by someone who joined
# in the same step has no member id yet: `link_ref` (action:<id> / rsvp:<id>) ties it to them once they join.
engagement_facts = Table(
    "engagement_facts",
    metadata,
    Column("kind", String(20), nullable=False),  # action | attendance
    Column("fact_id", String(64), nullable=False),
    Column("member_id", String(36), nullable=True, index=True),
    Column("link_ref", String(80), nullable=True, index=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("kind", "fact_id"),
)

units = Table(
    "units",
    metadata,
    Column("unit_id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("parent_id", String(36), nullable=True),
)

meetings = Table(
    "meetings",
    metadata,
    Column("meeting_id", String(36), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("venue", String(500), nullable=True),
    Column("public_url", String(1000), nullable=False),
    Column("campaign_id", String(36), nullable=True, index=True),
    Column("status", String(20), nullable=False, server_default="scheduled"),  # scheduled | cancelled
)


# The reporting read model ------------------------------------------------------------------------------
def _inbox(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("consumer", String(120), nullable=False),
        Column("event_id", Uuid, nullable=False),
        Column("event_type", String(80), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id"),
    )


# Its own inbox, so a rebuild can swap the read model and its record of handled events in one transaction.
rpt_inbox = _inbox(metadata, "rpt_inbox")

rpt_units = Table(
    "rpt_units",
    metadata,
    Column("unit_id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("parent_id", String(36), nullable=True),
)

rpt_members = Table(
    "rpt_members",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("region_id", String(36), nullable=True),
    Column("group_ids", ARRAY(String(36)), nullable=False, server_default=text("'{}'")),
    Column("subteam_ids", ARRAY(String(36)), nullable=False, server_default=text("'{}'")),
    Column("organisation_id", String(36), nullable=True),
    Column("source", String(500), nullable=True),
    Column("joined_at", DateTime(timezone=True), nullable=False),
    Column("left_at", DateTime(timezone=True), nullable=True),
    Column("status", String(20), nullable=False, server_default="active"),  # active | left | erased
    Index("ix_rpt_members_source", "source"),
    Index("ix_rpt_members_joined_at", "joined_at"),  # the dashboard's "joined in the last 30 days"
)

rpt_meetings = Table(
    "rpt_meetings",
    metadata,
    Column("meeting_id", String(36), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=True),
    Column("campaign_id", String(36), nullable=True),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False, server_default="scheduled"),
)

rpt_rsvps = Table(
    "rpt_rsvps",
    metadata,
    Column("rsvp_id", String(36), primary_key=True),
    Column("meeting_id", String(36), nullable=False, index=True),
    Column("member_id", String(36), nullable=True),
    Column("status", String(20), nullable=False),  # going | waitlisted | cancelled
    Column("attended_at", DateTime(timezone=True), nullable=True),
)

rpt_campaigns = Table(
    "rpt_campaigns",
    metadata,
    Column("campaign_id", String(36), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("scope_type", String(20), nullable=False),
    Column("scope_id", String(36), nullable=True),
    Column("partner_ids", ARRAY(String(36)), nullable=False, server_default=text("'{}'")),
    Column("launched_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
)

rpt_asks = Table(
    "rpt_asks",
    metadata,
    Column("ask_id", String(36), primary_key=True),
    Column("campaign_id", String(36), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("title", String(200), nullable=False),
)

rpt_actions = Table(
    "rpt_actions",
    metadata,
    Column("action_id", String(36), primary_key=True),
    Column("ask_id", String(36), nullable=False),
    Column("campaign_id", String(36), nullable=False, index=True),
    Column("kind", String(20), nullable=False),
    Column("member_id", String(36), nullable=True, index=True),  # a member's actions, placed again when they move
    Column("region_id", String(36), nullable=True),
    Column("group_id", String(36), nullable=True),
    Column("join_network", Boolean, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
)

rpt_levels = Table(
    "rpt_levels",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("level", String(40), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)

# The dashboard's member figures per scope, kept by the projection (services/campaigns/tallies.py).
rpt_tallies = Table(
    "rpt_tallies",
    metadata,
    Column("scope_type", String(20), nullable=False),  # network | region | group | subteam
    Column("scope_id", String(36), nullable=False),  # "" for the network
    Column("kind", String(20), nullable=False),  # place | level | partner | ask | campaign
    # a region or group id, "" for none, "*" for all; a level; a partner; an ask; a campaign
    Column("key", String(40), nullable=False),
    Column("week", Date, nullable=False),  # the Monday of the joins and leaves counted (places); 1970-01-01 else
    Column("joins", BigInteger, nullable=False),  # asks and campaigns: the actions
    Column("leaves", BigInteger, nullable=False),  # asks and campaigns: the actions that joined the network
    PrimaryKeyConstraint("scope_type", "scope_id", "kind", "key", "week"),
)

# Swapped together by `rebuild-reporting`, in this order.
REPORTING_TABLES: tuple[Table, ...] = (
    rpt_inbox,
    rpt_units,
    rpt_members,
    rpt_meetings,
    rpt_rsvps,
    rpt_campaigns,
    rpt_asks,
    rpt_actions,
    rpt_levels,
    rpt_tallies,
)
