"""The one registry of Kafka topics: names, partitions, replication and retention.

Topics are created explicitly by `python -m shared.topics create` (broker auto-creation is off).
Domain topics keep their history forever: the campaigns service rebuilds its reporting read model
from the beginning of them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from aiokafka.errors import KafkaConnectionError

from shared.config import get_settings
from shared.kafka_security import kafka_client_options

FOREVER = -1
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str
    partitions: int | None = None  # None: the configured default (KAFKA_PARTITIONS)
    retention_ms: int = FOREVER
    compacted: bool = False
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self, replication_factor: int = 1, min_insync_replicas: int | None = None) -> dict[str, str]:
        """The topic's configuration; `min.insync.replicas` only where `min_insync_for` decides one."""
        cfg = {"retention.ms": str(self.retention_ms)}
        insync = min_insync_for(replication_factor, min_insync_replicas)
        if insync is not None:
            cfg["min.insync.replicas"] = str(insync)
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        cfg.update(self.extra_config)
        return cfg


def min_insync_for(replication_factor: int, configured: int | None = None) -> int | None:
    """The `min.insync.replicas` a topic is created with, or None to take the cluster's own setting.

    With `acks=all`, a write is acknowledged once this many replicas have it: 2 of 3 means losing one broker's
    disk never loses an acknowledged event, and one broker down still accepts writes. Configured
    (`KAFKA_MIN_INSYNC_REPLICAS`) it is used as given, but never above replication factor - 1 (then one broker
    down would stop every write) and never below 1; unconfigured it is 2 from a replication factor of 3, and the
    cluster's default below that (a single broker: 1).
    """
    if configured is not None:
        if configured < 1:
            raise ValueError(f"KAFKA_MIN_INSYNC_REPLICAS must be at least 1, not {configured}")
        if replication_factor > 1 and configured > replication_factor - 1:
            raise ValueError(
                f"KAFKA_MIN_INSYNC_REPLICAS={configured} with a replication factor of {replication_factor}: one broker "
                f"down would refuse every write; use at most {replication_factor - 1}"
            )
        return configured if replication_factor > 1 else None
    return 2 if replication_factor >= 3 else None


MEMBERSHIP_MEMBERS = "membership.members"
MEMBERSHIP_ORGANISATION = "membership.organisation"
MEMBERSHIP_SUBJECT_KEYS = "membership.subject-keys"
EVENTS_MEETINGS = "events.meetings"
EVENTS_RSVPS = "events.rsvps"
EVENTS_SUBJECT_KEYS = "events.subject-keys"
CAMPAIGNS_CAMPAIGNS = "campaigns.campaigns"
CAMPAIGNS_ACTIONS = "campaigns.actions"
CAMPAIGNS_ENGAGEMENT = "campaigns.engagement"
CAMPAIGNS_SUBJECT_KEYS = "campaigns.subject-keys"
NOTIFICATIONS_DELIVERIES = "notifications.deliveries"
NOTIFICATIONS_DIGESTS = "notifications.digests"
EVENTS_MEMBER_DATA = "events.member-data"
CAMPAIGNS_MEMBER_DATA = "campaigns.member-data"
NOTIFICATIONS_MEMBER_DATA = "notifications.member-data"
MEMBER_DATA_RETENTION_MS = 7 * DAY_MS  # a part is wanted until membership collected it, minutes later

DOMAIN_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        MEMBERSHIP_MEMBERS,
        "Members joining, confirming, changing consent, leaving, erased, asked to confirm a request; key: member id",
    ),
    TopicSpec(MEMBERSHIP_ORGANISATION, "Regions, local groups, sub-teams, roles; key: the unit's id"),
    TopicSpec(
        MEMBERSHIP_SUBJECT_KEYS,
        "Per-member data keys for personal fields in events; a tombstone on erasure (crypto-shredding)",
        compacted=True,
        # Clean aggressively so an erased member's key leaves the log soon after the tombstone.
        extra_config={
            "segment.ms": str(60 * 1000),
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": str(60 * 1000),
            "max.compaction.lag.ms": str(5 * 60 * 1000),
        },
    ),
    TopicSpec(EVENTS_MEETINGS, "Meetings scheduled, updated, cancelled, reminders due; key: meeting id"),
    TopicSpec(EVENTS_RSVPS, "RSVPs, waitlist promotions, attendance; key: meeting id"),
    TopicSpec(
        EVENTS_SUBJECT_KEYS,
        "Per-RSVP data keys for the personal fields events seals; a tombstone on erasure (crypto-shredding)",
        compacted=True,
        extra_config={
            "segment.ms": str(60 * 1000),
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": str(60 * 1000),
            "max.compaction.lag.ms": str(5 * 60 * 1000),
        },
    ),
    TopicSpec(CAMPAIGNS_CAMPAIGNS, "Campaigns launched and asks published; key: campaign id"),
    TopicSpec(CAMPAIGNS_ACTIONS, "Actions taken on asks (key: ask id); letters to MPs (key: action id)"),
    TopicSpec(CAMPAIGNS_ENGAGEMENT, "Engagement level changes; key: member id"),
    TopicSpec(
        CAMPAIGNS_SUBJECT_KEYS,
        "Per-action data keys for the personal fields campaigns seals; a tombstone on erasure (crypto-shredding)",
        compacted=True,
        extra_config={
            "segment.ms": str(60 * 1000),
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": str(60 * 1000),
            "max.compaction.lag.ms": str(5 * 60 * 1000),
        },
    ),
    TopicSpec(
        NOTIFICATIONS_DELIVERIES, "Notifications sent or failed; key: recipient member id", retention_ms=90 * DAY_MS
    ),
    TopicSpec(NOTIFICATIONS_DIGESTS, "Digests published; key: organiser id", retention_ms=90 * DAY_MS),
    TopicSpec(
        EVENTS_MEMBER_DATA,
        "A member's RSVPs and attendance for their data download, sealed with their key; key: member id",
        retention_ms=MEMBER_DATA_RETENTION_MS,
    ),
    TopicSpec(
        CAMPAIGNS_MEMBER_DATA,
        "A member's actions, pledges and letters for their data download, sealed with their key; key: member id",
        retention_ms=MEMBER_DATA_RETENTION_MS,
    ),
    TopicSpec(
        NOTIFICATIONS_MEMBER_DATA,
        "The emails sent to a member and their digests, for their data download, sealed with their key; key: member "
        "id",
        retention_ms=MEMBER_DATA_RETENTION_MS,
    ),
)


def dead_letter_topic(consumer_group: str) -> str:
    """One dead-letter topic per consumer group."""
    return f"dlq.{consumer_group}"


# Every consumer group in the system, so their dead-letter topics exist before anyone needs them.
CONSUMER_GROUPS: tuple[str, ...] = (
    "notifications",
    "notifications.keys",
    "notifications.organisers",
    "notifications.activity",
    "events.members",
    "membership.reactions",
    "membership.public",
    "campaigns.engagement",
    "campaigns.reporting",
    "events.revocations",
    "notifications.revocations",
    "campaigns.revocations",
    "membership.member-data",
)


def dead_letter_specs() -> tuple[TopicSpec, ...]:
    return tuple(
        TopicSpec(dead_letter_topic(g), f"Dead letters of consumer group {g}", partitions=1, retention_ms=30 * DAY_MS)
        for g in CONSUMER_GROUPS
    )


def all_topics() -> tuple[TopicSpec, ...]:
    return DOMAIN_TOPICS + dead_letter_specs()


async def create_topics(bootstrap: str | None = None, extra: tuple[TopicSpec, ...] = ()) -> list[str]:
    """Create every registered topic that does not exist yet; return the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    settings = get_settings()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap or settings.kafka_bootstrap_servers, **kafka_client_options(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in (*all_topics(), *extra) if t.name not in existing]
        if wanted:
            await admin.create_topics(
                [
                    NewTopic(
                        name=t.name,
                        num_partitions=t.partitions or settings.kafka_partitions,
                        replication_factor=settings.kafka_replication_factor,
                        topic_configs=t.config(
                            settings.kafka_replication_factor, settings.kafka_min_insync_replicas
                        ),
                    )
                    for t in wanted
                ]
            )
        return [t.name for t in wanted]
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(prog="python -m shared.topics", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create", help="create every registered topic that is missing")
    sub.add_parser("list", help="print the registry")
    args = parser.parse_args(argv)
    if args.command == "list":
        for t in all_topics():
            print(f"{t.name:32} partitions={t.partitions or get_settings().kafka_partitions:<3} {t.description}")
        return 0
    try:
        created = asyncio.run(create_topics())
    except KafkaConnectionError as error:  # aiokafka has logged why each broker refused (TLS, SASL) just above
        settings = get_settings()
        print(f"{error}: Kafka at {settings.kafka_bootstrap_servers} refused or could not be reached over "
              f"{settings.kafka_security_protocol} (the reason is above; docs/scaling.md)", file=sys.stderr)
        return 1
    print(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else " (all existed)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
