"""Notifications' tables: who may be emailed (a mirror fed by events), and one row per delivery."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from shared.crypto import subject_keys_table
from shared.db import new_metadata
from shared.parking import parked_events_table
from shared.runtime import DeliveryTables

metadata = new_metadata()
delivery = DeliveryTables(metadata)
subject_keys = subject_keys_table(metadata)
parked_events = parked_events_table(metadata)

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
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
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
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text, nullable=True),
    Column("correlation_id", String(100), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    # One delivery per (kind, subject, recipient): a redelivered event or a second instance never sends twice.
    UniqueConstraint("kind", "subject_ref", "recipient_id", name="uq_deliveries_kind_subject_recipient"),
)
