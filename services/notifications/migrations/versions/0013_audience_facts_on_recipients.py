"""A mailing's live count from one narrow index (bench/audience.py, issue 17): what the count needs of each
recipient, kept on its row in a form an index holds whole, so counting a few hundred thousand people is an
index-only scan instead of reading every wide row, anti-joining the suppression list and probing participation.

- `suppressed`: the address is on the suppression list (any reason stops a mailing). Kept by triggers wherever
  either side changes: a recipient's `address_key` written (insert, new address, `fill_address_keys`) and a
  suppression added or lifted. An advisory lock on the address key orders the two, so a suppression committed
  while a recipient with that address is written (or the other way round) is never missed.
- `took_part_at`: the member's last participation (`participation.last_at`), kept by triggers on participation
  (RSVPs, attendance, actions) and read when the recipient's row is inserted (participation may come first),
  ordered the same way by a lock on the member id.
- `audience_terms`: a generated column, the 64-bit hashes (`hashtextextended`) of 'unit:<id>' for the member's
  region, groups and sub-teams, 'level:<level>' and 'interest:<interest>': "in unit X" (region, group or
  sub-team), "any of these interests", "at one of these levels" are each one array test on it.

Indexes over the members a mailing can reach (confirmed, an address, a yes to email, not suppressed): a covering
btree (joined_at, with the terms and took_part_at), which a count reads alone; the same by took_part_at for those
who took part (a count of who took part lately reads only them); and a GIN on the terms (a few people).
Expand only (docs/operations.md): the GIN indexes of 0012 on group_ids, subteam_ids and interests, which only the
previous release's count reads, stay until a later contract release drops them.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIENCE = "email IS NOT NULL AND email_consent AND status = 'confirmed' AND NOT suppressed"
# Advisory lock namespaces (first key of pg_advisory_xact_lock(int, int)): an address key, a member id.
ADDRESS_LOCK, MEMBER_LOCK = 1301, 1302

DOWNGRADE = (
    "DROP INDEX IF EXISTS ix_recipients_audience_took_part",
    "DROP INDEX IF EXISTS ix_recipients_audience_terms",
    "DROP INDEX IF EXISTS ix_recipients_audience",
    "DROP TRIGGER IF EXISTS participation_to_recipients ON participation",
    "DROP TRIGGER IF EXISTS suppressions_to_recipients ON suppressions",
    "DROP TRIGGER IF EXISTS recipients_audience_facts ON recipients",
    "DROP FUNCTION IF EXISTS participation_to_recipients()",
    "DROP FUNCTION IF EXISTS suppressions_to_recipients()",
    "DROP FUNCTION IF EXISTS recipients_audience_facts()",
    "ALTER TABLE recipients DROP COLUMN audience_terms, DROP COLUMN took_part_at, DROP COLUMN suppressed",
    "DROP FUNCTION IF EXISTS recipient_audience_terms(text, text[], text[], text, text[])",
)


def upgrade() -> None:
    op.execute(
        """
CREATE FUNCTION recipient_audience_terms(region text, groups text[], subteams text[], level text, interests text[])
RETURNS bigint[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(DISTINCT pg_catalog.hashtextextended(t, 0)), '{}')
  FROM (SELECT 'unit:' || region WHERE region IS NOT NULL
        UNION ALL SELECT 'unit:' || g FROM unnest(groups) AS g
        UNION ALL SELECT 'unit:' || s FROM unnest(subteams) AS s
        UNION ALL SELECT 'level:' || level WHERE level IS NOT NULL
        UNION ALL SELECT 'interest:' || i FROM unnest(interests) AS i) AS terms(t)
$$
"""
    )
    op.execute(
        """
ALTER TABLE recipients
  ADD COLUMN suppressed boolean NOT NULL DEFAULT false,
  ADD COLUMN took_part_at timestamptz,
  ADD COLUMN audience_terms bigint[] GENERATED ALWAYS AS
    (recipient_audience_terms(region_id::text, group_ids, subteam_ids, engagement_level::text, interests)) STORED
"""
    )
    op.execute(
        f"""
CREATE FUNCTION recipients_audience_facts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.address_key IS DISTINCT FROM OLD.address_key THEN
    IF NEW.address_key IS NULL THEN
      NEW.suppressed := false;
    ELSE
      PERFORM pg_advisory_xact_lock({ADDRESS_LOCK}, hashtext(NEW.address_key));
      NEW.suppressed := EXISTS (SELECT 1 FROM suppressions WHERE email = NEW.address_key);
    END IF;
  END IF;
  IF TG_OP = 'INSERT' THEN
    PERFORM pg_advisory_xact_lock({MEMBER_LOCK}, hashtext(NEW.member_id));
    NEW.took_part_at := (SELECT last_at FROM participation WHERE member_id = NEW.member_id);
  END IF;
  RETURN NEW;
END
$$
"""
    )
    op.execute(
        "CREATE TRIGGER recipients_audience_facts BEFORE INSERT OR UPDATE OF address_key ON recipients "
        "FOR EACH ROW EXECUTE FUNCTION recipients_audience_facts()"
    )
    op.execute(
        f"""
CREATE FUNCTION suppressions_to_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  akey text;
BEGIN
  FOREACH akey IN ARRAY ARRAY[CASE WHEN TG_OP <> 'INSERT' THEN OLD.email END,
                             CASE WHEN TG_OP <> 'DELETE' THEN NEW.email END] LOOP
    CONTINUE WHEN akey IS NULL;
    PERFORM pg_advisory_xact_lock({ADDRESS_LOCK}, hashtext(akey));
    UPDATE recipients SET suppressed = s.now_suppressed
      FROM (SELECT EXISTS (SELECT 1 FROM suppressions WHERE email = akey) AS now_suppressed) AS s
     WHERE address_key = akey AND suppressed IS DISTINCT FROM s.now_suppressed;
  END LOOP;
  RETURN NULL;
END
$$
"""
    )
    op.execute(
        "CREATE TRIGGER suppressions_to_recipients AFTER INSERT OR DELETE OR UPDATE OF email ON suppressions "
        "FOR EACH ROW EXECUTE FUNCTION suppressions_to_recipients()"
    )
    op.execute(
        f"""
CREATE FUNCTION participation_to_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  mid text;
BEGIN
  FOREACH mid IN ARRAY ARRAY[CASE WHEN TG_OP <> 'INSERT' THEN OLD.member_id END,
                             CASE WHEN TG_OP <> 'DELETE' THEN NEW.member_id END] LOOP
    CONTINUE WHEN mid IS NULL;
    PERFORM pg_advisory_xact_lock({MEMBER_LOCK}, hashtext(mid));
    UPDATE recipients SET took_part_at = p.last_at
      FROM (SELECT (SELECT last_at FROM participation WHERE member_id = mid) AS last_at) AS p
     WHERE member_id = mid AND took_part_at IS DISTINCT FROM p.last_at;
  END LOOP;
  RETURN NULL;
END
$$
"""
    )
    op.execute(
        "CREATE TRIGGER participation_to_recipients AFTER INSERT OR DELETE OR UPDATE OF member_id, last_at "
        "ON participation FOR EACH ROW EXECUTE FUNCTION participation_to_recipients()"
    )
    # The backfill (ADD COLUMN computed the generated column for every row).
    op.execute("UPDATE recipients r SET suppressed = true FROM suppressions s WHERE s.email = r.address_key")
    op.execute("UPDATE recipients r SET took_part_at = p.last_at FROM participation p WHERE p.member_id = r.member_id")
    op.execute(
        f"CREATE INDEX ix_recipients_audience ON recipients (joined_at) INCLUDE (audience_terms, took_part_at) "
        f"WHERE {AUDIENCE}"
    )
    op.execute(f"CREATE INDEX ix_recipients_audience_terms ON recipients USING gin (audience_terms) WHERE {AUDIENCE}")
    op.execute(
        "CREATE INDEX ix_recipients_audience_took_part ON recipients (took_part_at) INCLUDE (audience_terms) "
        f"WHERE {AUDIENCE} AND took_part_at IS NOT NULL"
    )


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
