"""Guessing at an organiser's sign-in is bounded (issue #14, point 8): after a few wrong tries the account waits
before its next sign-in is even checked, each further wrong try doubles the wait, and the organiser is emailed once
per wait. Time passing is simulated by ending the wait in the database (the first wait is 30 s)."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pyotp

from services.membership.domain import SIGNIN_FIRST_WAIT_S, SIGNIN_FREE_FAILURES
from tests.support.accounts import Account, active_account
from tests.support.mail import MailCatcher

SUBJECT = "Someone is trying to sign in to your"


async def _try(gateway: httpx.AsyncClient, account: Account, password: str) -> httpx.Response:
    return await gateway.post("/signin", data={"email": account.email, "password": password,
                                               "code": account.next_code()})


async def _end_the_wait(membership_db: asyncpg.Connection) -> None:
    await membership_db.execute("UPDATE signin_backoff SET locked_until = now() WHERE locked_until > now()")


def _warnings(messages: list[dict]) -> list[dict]:
    return [m for m in messages if SUBJECT in (m.get("subject") or "")]


async def test_wrong_sign_ins_make_the_account_wait_longer_each_time_and_warn_the_organiser_once_per_wait(
    gateway, membership_db, mail: MailCatcher
):
    account = await active_account(gateway, name="Guessed At")
    for _ in range(SIGNIN_FREE_FAILURES):
        wrong = await _try(gateway, account, "not the password")
        assert wrong.status_code == 401 and "not right" in wrong.text

    waiting = await _try(gateway, account, account.password)  # even the right password waits
    assert waiting.status_code == 429 and "Too many attempts" in waiting.text
    first_wait = int(waiting.headers["retry-after"])
    assert SIGNIN_FIRST_WAIT_S - 5 <= first_wait <= SIGNIN_FIRST_WAIT_S + 1
    warned = _warnings(await mail.wait_for(account.email))
    assert len(warned) == 1
    body = warned[0]["text"]
    assert "Guessed" in body and f"{SIGNIN_FREE_FAILURES} times" in body and "recovery codes" in body

    await _end_the_wait(membership_db)
    assert (await _try(gateway, account, "still not it")).status_code == 401
    again = await _try(gateway, account, account.password)
    assert again.status_code == 429
    assert 2 * SIGNIN_FIRST_WAIT_S - 5 <= int(again.headers["retry-after"]) <= 2 * SIGNIN_FIRST_WAIT_S + 1
    await mail.wait_for(account.email, count=2)
    assert len(_warnings(await mail.settle(account.email))) == 2  # one per wait, not one per refused try

    await _end_the_wait(membership_db)
    assert (await _try(gateway, account, account.password)).status_code == 303  # the organiser gets in
    assert await membership_db.fetchval("SELECT count(*) FROM signin_backoff WHERE locked_until > now()") == 0


async def test_an_address_that_is_no_account_waits_the_same_and_nobody_is_emailed(gateway, mail: MailCatcher):
    nobody = Account("-", f"nobody-{uuid.uuid4().hex[:10]}@example.org", "x", pyotp.random_base32())
    since = await mail.mark()
    answers = [(await _try(gateway, nobody, f"guess {n}")).status_code for n in range(SIGNIN_FREE_FAILURES + 1)]
    assert answers[:SIGNIN_FREE_FAILURES] == [401] * SIGNIN_FREE_FAILURES and answers[-1] == 429
    assert await mail.messages(nobody.email, since=since) == []
