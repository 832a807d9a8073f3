"""Seed the Midlands demo network: three regions, a dozen local groups, sub-teams, partners, postcodes.

Each unit is also announced (OrganisationUnitDefined through the outbox), so other services learn it.
A real network renames or replaces these in the organiser pages.

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.membership import seeds
from shared.events.catalog import OrganisationUnitDefined
from shared.events.envelope import Envelope
from shared.outbox import shard_of

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _table(name: str, *columns: str) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in columns))


def upgrade() -> None:
    regions = [{"id": seeds.unit_id("region", s), "slug": s, "name": n} for s, n in seeds.REGIONS]
    groups = [
        {"id": seeds.unit_id("group", s), "slug": s, "name": n, "region_id": seeds.unit_id("region", r)}
        for s, n, r in seeds.GROUPS
    ]
    subteams = [
        {"id": seeds.unit_id("subteam", s), "slug": s, "name": n, "description": d} for s, n, d in seeds.SUBTEAMS
    ]
    partners = [{"id": seeds.unit_id("partner", s), "slug": s, "name": n} for s, n in seeds.PARTNERS]
    op.bulk_insert(_table("regions", "id", "slug", "name"), regions)
    op.bulk_insert(_table("local_groups", "id", "slug", "name", "region_id"), groups)
    op.bulk_insert(_table("subteams", "id", "slug", "name", "description"), subteams)
    op.bulk_insert(_table("partner_organisations", "id", "slug", "name"), partners)
    op.bulk_insert(
        _table("postcode_districts", "prefix", "region_id", "group_id"),
        [
            {"prefix": p, "region_id": seeds.unit_id("region", r), "group_id": seeds.unit_id("group", g)}
            for p, r, g in seeds.POSTCODE_DISTRICTS
        ],
    )
    announcements = [
        *(OrganisationUnitDefined(unit_id=r["id"], kind="region", name=r["name"], slug=r["slug"]) for r in regions),
        *(
            OrganisationUnitDefined(
                unit_id=g["id"], kind="group", name=g["name"], slug=g["slug"], parent_id=g["region_id"]
            )
            for g in groups
        ),
        *(OrganisationUnitDefined(unit_id=s["id"], kind="subteam", name=s["name"], slug=s["slug"]) for s in subteams),
        *(OrganisationUnitDefined(unit_id=p["id"], kind="partner", name=p["name"], slug=p["slug"]) for p in partners),
    ]
    rows = []
    for event in announcements:
        env = Envelope.wrap(event, correlation_id="migration-0005")
        rows.append(
            {
                "event_id": env.event_id,
                "event_type": env.type,
                "topic": event.topic,
                "key": env.subject_id,
                "shard": shard_of(env.subject_id),
                "payload": env.to_bytes(),
                "headers": {"type": env.type, "version": str(env.version), "correlation_id": env.correlation_id},
            }
        )
    outbox = sa.table(
        "outbox",
        sa.column("event_id", sa.Uuid),
        sa.column("event_type"),
        sa.column("topic"),
        sa.column("key"),
        sa.column("shard"),
        sa.column("payload", sa.LargeBinary),
        sa.column("headers", sa.JSON),
    )
    op.bulk_insert(outbox, rows)


def downgrade() -> None:
    for table in ("postcode_districts", "partner_organisations", "subteams", "local_groups", "regions"):
        op.execute(f"DELETE FROM {table}")
