"""A group's members from an index alone: member_groups' index on (group_id, member_id) replaces the one on group_id.

A group organiser's search checks its scope on the search's finds by one hash join with the group's members
(`roster._capped_count_and_page`); read through the index on group_id, those 121,631 rows of the biggest group at a
million lay on 14,284 pages of the table (0.15-0.2 s, most of the search); from this index they are read from about
1,500 of its pages and no table page (0.02-0.05 s; docs/benchmarks.md, "The group organiser's search at a million,
again"). It serves whatever the index on group_id served (the same first column), so that one goes.

Revision ID: 0022
Revises: 0021
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_member_groups_group_id_member_id", "member_groups", ["group_id", "member_id"])
    op.drop_index("ix_member_groups_group_id", table_name="member_groups")


def downgrade() -> None:
    op.create_index("ix_member_groups_group_id", "member_groups", ["group_id"])
    op.drop_index("ix_member_groups_group_id_member_id", table_name="member_groups")
