"""Membership's tables (its own database) and the queries over them."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    String,
    Table,
    Text,
    func,
    text,
)

from shared.crypto import subject_keys_table
from shared.db import new_metadata
from shared.runtime import DeliveryTables

metadata = new_metadata()
delivery = DeliveryTables(metadata)
subject_keys = subject_keys_table(metadata)

members = Table(
    "members",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email_normalised", String(254), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("postcode", String(10), nullable=False),
    Column("region_id", String(36), nullable=True),
    Column("engagement_level", String(40), nullable=False),
    Column("interests", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("email_consent", Boolean, nullable=False),
    Column("source", String(500), nullable=False),
    Column("joined_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
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
    Column("ip_hash", String(64), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
