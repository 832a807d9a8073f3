"""The sign-in back-off rule (no I/O): a few wrong tries are free, then each one doubles the wait, up to an hour;
a day without a wrong try starts the count again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.membership.domain import (
    SIGNIN_FIRST_WAIT_S,
    SIGNIN_FREE_FAILURES,
    SIGNIN_MAX_WAIT_S,
    failures_so_far,
    sign_in_wait_s,
)


def test_the_first_wrong_tries_wait_nothing_then_each_one_doubles_the_wait():
    assert [sign_in_wait_s(n) for n in range(SIGNIN_FREE_FAILURES)] == [0] * SIGNIN_FREE_FAILURES
    waits = [sign_in_wait_s(SIGNIN_FREE_FAILURES + n) for n in range(4)]
    assert waits == [SIGNIN_FIRST_WAIT_S, 2 * SIGNIN_FIRST_WAIT_S, 4 * SIGNIN_FIRST_WAIT_S, 8 * SIGNIN_FIRST_WAIT_S]


def test_the_wait_never_passes_an_hour_however_many_wrong_tries():
    assert sign_in_wait_s(SIGNIN_FREE_FAILURES + 100) == SIGNIN_MAX_WAIT_S == 3600
    assert sign_in_wait_s(10**9) == SIGNIN_MAX_WAIT_S


def test_wrong_tries_are_forgotten_a_day_after_the_last_one():
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert failures_so_far(7, now - timedelta(hours=23), now) == 7
    assert failures_so_far(7, now - timedelta(hours=25), now) == 0
    assert failures_so_far(7, None, now) == 0
