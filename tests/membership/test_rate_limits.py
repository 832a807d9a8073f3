"""Rate limits judge a sliding window: a burst just before a window's boundary still counts just after it (a fixed
window would reset there, and let through twice the limit, or a flood that straddles the boundary)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.membership.ratelimit import JOIN_PER_IP, RateLimiter, _judge
from tests.membership.conftest import join_form, member_by_email, unique_email


def test_the_previous_window_counts_by_how_much_the_sliding_window_still_overlaps_it():
    # 20 an hour: 20 hits in the last hour-window, 1 now, 2 s into the new window: refused (20 * 0.9994 + 1 > 20).
    refused = _judge(count=1, previous=20, max_count=20, window=3600, elapsed=2)
    assert not refused.allowed
    assert 170 <= refused.retry_after_s <= 185  # once the old window weighs 19/20 or less
    assert _judge(count=1, previous=20, max_count=20, window=3600, elapsed=1800).allowed  # half of it: 11
    assert _judge(count=20, previous=0, max_count=20, window=3600, elapsed=10).allowed
    over = _judge(count=21, previous=0, max_count=20, window=3600, elapsed=10)
    assert not over.allowed and over.retry_after_s > 3590  # this window is full: into the next one


async def test_a_flood_just_before_a_window_boundary_still_counts_after_it(client, db, membership_settings):
    ip = "192.0.2.43"
    limit, window = await db.fetchrow("SELECT max_count, window_s FROM rate_limits WHERE name = $1", JOIN_PER_IP)
    bucket = RateLimiter(membership_settings.secret_key)._bucket(JOIN_PER_IP, ip)
    now = datetime.now(UTC)
    current = datetime.fromtimestamp(int(now.timestamp()) // window * window, UTC)
    # The previous window was flooded far beyond the limit: whatever the time within this window (but its last
    # second), what is left of that flood's weight keeps this address over the limit.
    await db.execute(
        "INSERT INTO rate_limit_hits (bucket, window_start, hits) VALUES ($1, $2, $3)",
        bucket, current - timedelta(seconds=window), limit * window,
    )
    email = unique_email("after-boundary")
    refused = await client.post("/join", data=join_form(email), headers={"X-Forwarded-For": ip})
    assert refused.status_code == 429 and "Too many sign-ups" in refused.text
    assert await member_by_email(db, email) is None
