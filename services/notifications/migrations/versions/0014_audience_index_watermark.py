"""What the in-memory audience index (services/notifications/audience_index.py, issue 17) needs to stay exactly live:
a small number for each recipient, and a stamp of the last transaction that changed what a count reads.

- `audience_no`: an integer from a sequence (the bitmaps' members), backfilled in batches, unique.
- `audience_xid`: the id of the transaction that last wrote a column a count reads (reachability, places, level,
  interests, join date, last participation), set by a BEFORE trigger that fires after 0013's (triggers fire by
  name): a refresh reads the rows stamped at or after its previous snapshot's xmin. Indexed where set.
- `audience_tombstones`: a deleted recipient's number and the deleting transaction's id (erasure deletes the row),
  written by a statement trigger; pruned a day later (decision 0013).
- `audience_index_state`: one row, `generation` (raised by a TRUNCATE, after which every index loads afresh) and
  `prune_horizon` (the newest pruned tombstone's transaction id: an index whose watermark is not above it may have
  missed one, and loads afresh).

Expand only: the previous release's inserts get a number from the column's default and a stamp from the trigger.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The one tightening (audience_no SET NOT NULL) comes after the column's default (the sequence) is in place and
# every row is numbered: the previous release's inserts, which do not name the column, get a number from it.
CONTRACT = "audience_no is NOT NULL only once its default numbers every insert the previous release makes"

BATCH = 50_000
# The columns a count reads (db.AUDIENCE's, the audience terms' sources, the two dates); the address only as
# present or not.
WATCHED = (
    "status", "email_consent", "suppressed", "region_id", "group_ids", "subteam_ids", "engagement_level",
    "interests", "joined_at", "took_part_at",
)

DOWNGRADE = (
    "DROP TRIGGER IF EXISTS recipients_audience_xid ON recipients",
    "DROP TRIGGER IF EXISTS recipients_audience_tombstones ON recipients",
    "DROP TRIGGER IF EXISTS recipients_audience_truncated ON recipients",
    "DROP FUNCTION IF EXISTS recipients_audience_xid()",
    "DROP FUNCTION IF EXISTS recipients_audience_tombstones()",
    "DROP FUNCTION IF EXISTS recipients_audience_truncated()",
    "DROP TABLE IF EXISTS audience_tombstones",
    "DROP TABLE IF EXISTS audience_index_state",
    "ALTER TABLE recipients DROP COLUMN audience_xid, DROP COLUMN audience_no",
)


def upgrade() -> None:
    op.execute("CREATE SEQUENCE recipients_audience_no_seq AS integer")
    op.execute("ALTER TABLE recipients ADD COLUMN audience_no integer, ADD COLUMN audience_xid xid8")
    op.execute("ALTER SEQUENCE recipients_audience_no_seq OWNED BY recipients.audience_no")
    op.execute("ALTER TABLE recipients ALTER COLUMN audience_no SET DEFAULT nextval('recipients_audience_no_seq')")
    bind = op.get_bind()
    after: str | None = ""
    while after is not None:
        after = bind.execute(
            sa.text(
                "WITH batch AS (SELECT member_id FROM recipients WHERE member_id > :after "
                "ORDER BY member_id LIMIT :n), "
                "numbered AS (UPDATE recipients r SET audience_no = nextval('recipients_audience_no_seq') "
                "FROM batch WHERE r.member_id = batch.member_id AND r.audience_no IS NULL RETURNING 1) "
                "SELECT (SELECT max(member_id) FROM batch), (SELECT count(*) FROM numbered)"
            ),
            {"after": after, "n": BATCH},
        ).scalar()
    op.execute("ALTER TABLE recipients ALTER COLUMN audience_no SET NOT NULL")
    op.execute("CREATE UNIQUE INDEX ix_recipients_audience_no ON recipients (audience_no)")
    op.execute("CREATE INDEX ix_recipients_audience_xid ON recipients (audience_xid) WHERE audience_xid IS NOT NULL")
    op.execute(
        "CREATE TABLE audience_tombstones (audience_no integer NOT NULL, xid xid8 NOT NULL, "
        "deleted_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("CREATE INDEX ix_audience_tombstones_xid ON audience_tombstones (xid)")
    op.execute(
        "CREATE TABLE audience_index_state (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
        "generation bigint NOT NULL DEFAULT 0, prune_horizon xid8 NOT NULL DEFAULT '0')"
    )
    op.execute("INSERT INTO audience_index_state DEFAULT VALUES")
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in WATCHED)
    op.execute(
        f"""
CREATE FUNCTION recipients_audience_xid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR (NEW.email IS NULL) <> (OLD.email IS NULL) OR {changed} THEN
    NEW.audience_xid := pg_current_xact_id();
  END IF;
  RETURN NEW;
END
$$
"""
    )
    op.execute(
        "CREATE TRIGGER recipients_audience_xid BEFORE INSERT OR UPDATE ON recipients "
        "FOR EACH ROW EXECUTE FUNCTION recipients_audience_xid()"
    )
    op.execute(
        """
CREATE FUNCTION recipients_audience_tombstones() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audience_tombstones (audience_no, xid)
  SELECT audience_no, pg_current_xact_id() FROM gone WHERE audience_no IS NOT NULL;
  RETURN NULL;
END
$$
"""
    )
    op.execute(
        "CREATE TRIGGER recipients_audience_tombstones AFTER DELETE ON recipients REFERENCING OLD TABLE AS gone "
        "FOR EACH STATEMENT EXECUTE FUNCTION recipients_audience_tombstones()"
    )
    op.execute(
        """
CREATE FUNCTION recipients_audience_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE audience_index_state SET generation = generation + 1;
  RETURN NULL;
END
$$
"""
    )
    op.execute(
        "CREATE TRIGGER recipients_audience_truncated AFTER TRUNCATE ON recipients "
        "FOR EACH STATEMENT EXECUTE FUNCTION recipients_audience_truncated()"
    )
    # Statistics for the new columns: without them a refresh's "audience_xid >= x" is guessed at a third of the
    # table, and its plan's cost is JIT-compiled on every refresh (60-80 ms at a million rows).
    op.execute("ANALYZE recipients")


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
