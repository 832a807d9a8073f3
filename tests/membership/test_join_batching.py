"""Join forms stored together (services/membership/batching.py): a batch has exactly the effects of the same
submissions one after another, and one bad submission cannot take the others down with it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.exc import IntegrityError

from services.membership import db as tables
from services.membership.batching import JoinBatcher
from services.membership.domain import JoinApplication
from services.membership.joins import Joins, PendingJoin
from shared.db import Database
from shared.outbox import Outbox
from shared.uow import UnitsOfWork
from tests.membership.conftest import unique_email


@pytest.fixture
async def membership(membership_test_db_url: str, membership_settings) -> AsyncIterator[Joins]:
    db = Database(membership_test_db_url, pool_size=4)
    yield Joins(UnitsOfWork(db, Outbox(tables.delivery.outbox)), membership_settings.secret_key)
    await db.dispose()


def application(email: str, name: str = "Claudia Jones", **fields) -> JoinApplication:
    values = {
        "postcode": "B15 2TT",
        "email_consent": True,
        "consent_version": "email-2026-11",
        "engagement_level": "informed",
        **fields,
    }
    return JoinApplication(name=name, email=email, **values)


def address() -> str:
    """An address no other test uses (other tests flood 192.0.2.x addresses up to their limit)."""
    return f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}::1"


async def joined_events(db, email: str) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM outbox o JOIN members m ON o.key = m.id "
        "WHERE m.email_normalised = $1 AND o.event_type = 'MemberJoined'",
        email,
    )


async def test_a_batch_has_the_effects_of_its_joins_one_after_another(membership, db):
    ada, bea = unique_email("batch-ada"), unique_email("batch-bea")
    limit = await db.fetchval("SELECT max_count FROM rate_limits WHERE name = 'join-per-email'")
    bombed = unique_email("batch-bombed")
    batch = [
        PendingJoin(application(ada, "Ada First"), address(), "corr-ada"),
        PendingJoin(application(bea, "Bea"), address(), "corr-bea"),
        PendingJoin(application(ada, "Ada Second"), address(), "corr-ada-2"),  # the same address again
        *(PendingJoin(application(bombed, f"Bombed {i}"), address()) for i in range(limit + 1)),
    ]
    results = await membership.submit_joins(batch)

    assert [r.address_allowed for r in results] == [True] * len(batch)
    first_ada, _, second_ada = results[0].outcome, results[1].outcome, results[2].outcome
    assert first_ada.new_member and not second_ada.new_member and first_ada.member_id == second_ada.member_id
    assert results[1].outcome.new_member
    assert [r.outcome is not None for r in results[3:]] == [True] * limit + [False]  # the last: over the limit
    assert results[3].outcome.new_member and not any(r.outcome.new_member for r in results[4:-1])

    row = await db.fetchrow("SELECT * FROM members WHERE email_normalised = $1", ada)
    assert row["name"] == "Ada First"  # the second join for the address waits for Ada to confirm it
    assert await db.fetchval("SELECT count(*) FROM consent_records WHERE member_id = $1", row["id"]) == 1
    waiting = "SELECT count(*) FROM member_requests WHERE member_id = $1 AND kind = 'join-change'"
    assert await db.fetchval(waiting, row["id"]) == 1
    bombed_row = await db.fetchrow("SELECT id, name FROM members WHERE email_normalised = $1", bombed)
    assert bombed_row["name"] == "Bombed 0" and await db.fetchval(waiting, bombed_row["id"]) == 1
    assert [await joined_events(db, e) for e in (ada, bea, bombed)] == [1, 1, 1]
    correlation = await db.fetchval(
        "SELECT headers->>'correlation_id' FROM outbox WHERE key = $1 AND event_type = 'MemberJoined'", row["id"]
    )
    assert correlation == "corr-ada"  # each person's events carry their own request's id


async def test_an_address_over_its_limit_is_refused_within_a_batch(membership, db):
    ip = address()
    limit = await db.fetchval("SELECT max_count FROM rate_limits WHERE name = 'join-per-ip'")
    emails = [unique_email("batch-flood") for _ in range(limit + 2)]
    results = await membership.submit_joins([PendingJoin(application(e), ip) for e in emails])
    assert [r.address_allowed for r in results] == [True] * limit + [False, False]
    stored = await db.fetchval("SELECT count(*) FROM members WHERE email_normalised = ANY($1)", emails)
    assert stored == limit


async def test_one_bad_join_in_a_batch_fails_alone_and_the_others_are_stored(membership, db):
    batcher = JoinBatcher(membership, writers=1)
    good = [unique_email("batch-good") for _ in range(3)]
    bad = unique_email("batch-bad")
    submissions = [
        batcher.submit(application(good[0]), ip=address()),
        batcher.submit(application(bad, group_ids=["no-such-group"]), ip=address()),  # breaks a foreign key
        batcher.submit(application(good[1]), ip=address()),
        batcher.submit(application(good[2]), ip=address()),
    ]
    results = await asyncio.gather(*submissions, return_exceptions=True)

    assert isinstance(results[1], IntegrityError)
    assert all(r.outcome is not None and r.outcome.new_member for i, r in enumerate(results) if i != 1)
    assert await db.fetchval("SELECT count(*) FROM members WHERE email_normalised = ANY($1)", good) == 3
    assert await db.fetchval("SELECT count(*) FROM members WHERE email_normalised = $1", bad) == 0
    assert batcher.joins == 4 and batcher.batches < 4  # they were written together, then one by one
