"""Migrations only expand (docs/operations.md, "Upgrades without downtime"): `make roll` applies them while the
previous release still serves, so an upgrade() may add tables, nullable columns or columns with a default, and
indexes, but never drop, rename or tighten what running code reads and writes. A migration that has to (the
*contract* step, a release after the code stopped using it) says so with a module-level `CONTRACT = "<why it is
safe now>"`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted(REPO.glob("services/*/migrations/versions/*.py"))

DESTRUCTIVE_OPS = {"drop_column", "drop_table", "rename_table", "drop_constraint"}
DESTRUCTIVE_SQL = re.compile(
    r"\bDROP\s+(TABLE|COLUMN)\b|\bRENAME\b|\bSET\s+NOT\s+NULL\b|\bALTER\s+COLUMN\s+\w+\s+(SET\s+DATA\s+)?TYPE\b",
    re.IGNORECASE,
)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _column_calls(call: ast.Call) -> list[ast.Call]:
    return [a for a in call.args if isinstance(a, ast.Call) and getattr(a.func, "attr", "") == "Column"]


def violations(source: str) -> list[str]:
    """What an upgrade() in `source` does that the previous release's code could trip over."""
    tree = ast.parse(source)
    if any(
        isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CONTRACT" for t in node.targets)
        for node in tree.body
    ):
        return []
    upgrade = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None)
    found: list[str] = []
    for node in ast.walk(upgrade) if upgrade else ():
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        op, line = node.func.attr, node.lineno
        if op in DESTRUCTIVE_OPS:
            found.append(f"line {line}: op.{op}")
        elif op == "alter_column":
            if _keyword(node, "new_column_name") is not None or _keyword(node, "type_") is not None:
                found.append(f"line {line}: op.alter_column renames or retypes a column")
            if _is_false(_keyword(node, "nullable")):
                found.append(f"line {line}: op.alter_column makes a column NOT NULL")
        elif op == "add_column":
            for column in _column_calls(node):
                required = _is_false(_keyword(column, "nullable")) or _keyword(column, "primary_key") is not None
                if required and _keyword(column, "server_default") is None:
                    found.append(f"line {line}: op.add_column adds a NOT NULL column without a server_default")
        elif op == "execute":
            text = " ".join(a.value for a in ast.walk(node) if isinstance(a, ast.Constant) and isinstance(a.value, str))
            if DESTRUCTIVE_SQL.search(text):
                found.append(f"line {line}: op.execute drops, renames or tightens: {text[:80]!r}")
    return found


@pytest.mark.parametrize("path", MIGRATIONS, ids=lambda p: f"{p.parts[-4]}/{p.name}")
def test_every_migration_only_expands_unless_it_says_why_contracting_is_safe(path: Path):
    assert not violations(path.read_text()), (
        f"{path.relative_to(REPO)} would break the release still serving during `make roll`: "
        f"{violations(path.read_text())}; split it into expand now and contract in a later release "
        "(then mark that one CONTRACT = '<why it is safe>')"
    )


def test_there_are_migrations_to_check():
    assert {p.parts[-4] for p in MIGRATIONS} == {"membership", "events", "notifications", "campaigns"}


@pytest.mark.parametrize(
    "body",
    [
        "op.drop_column('members', 'phone')",
        "op.alter_column('members', 'phone', new_column_name='telephone')",
        "op.alter_column('members', 'phone', nullable=False)",
        "op.add_column('members', sa.Column('tier', sa.Text(), nullable=False))",
        "op.execute('ALTER TABLE members DROP COLUMN phone')",
        'op.execute("ALTER TABLE members ALTER COLUMN phone SET NOT NULL")',
    ],
)
def test_the_checker_catches_what_breaks_the_running_release(body: str):
    assert violations(f"def upgrade():\n    {body}\n")
    assert not violations(f"CONTRACT = 'phone unread since 0.9'\ndef upgrade():\n    {body}\n")


@pytest.mark.parametrize(
    "body",
    [
        "op.add_column('members', sa.Column('tier', sa.Text(), nullable=True))",
        "op.add_column('members', sa.Column('tier', sa.Text(), nullable=False, server_default='a'))",
        "op.create_index('ix', 'members', ['tier'])",
        "op.execute('CREATE INDEX IF NOT EXISTS ix ON members (tier)')",
    ],
)
def test_the_checker_lets_additions_through(body: str):
    assert not violations(f"def upgrade():\n    {body}\n")
