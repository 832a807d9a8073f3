"""Joining through the gateway, many at once, as people would."""

from __future__ import annotations

import asyncio

import httpx


async def join(client: httpx.AsyncClient, email: str, *, name: str = "Test Member", postcode: str = "B1 1AA") -> int:
    response = await client.post(
        "/join", data={"name": name, "email": email, "postcode": postcode, "email_consent": "yes"}
    )
    return response.status_code


async def join_many(client: httpx.AsyncClient, emails: list[str], *, concurrency: int = 20, **kw: str) -> list[int]:
    gate = asyncio.Semaphore(concurrency)

    async def one(email: str) -> int:
        async with gate:
            return await join(client, email, **kw)

    return await asyncio.gather(*(one(e) for e in emails))


async def member_ids(conn, emails: list[str]) -> dict[str, str]:
    rows = await conn.fetch("SELECT id, email_normalised FROM members WHERE email_normalised = ANY($1)", emails)
    return {r["email_normalised"]: r["id"] for r in rows}


async def wait_for_welcomes(mail, emails: list[str], timeout: float = 120.0, since: int = 0) -> dict[str, int]:
    """Wait until every address has a welcome email (newer than message `since`); return how many each got."""
    wanted = set(emails)
    deadline = asyncio.get_running_loop().time() + timeout
    counts: dict[str, int] = {}
    while True:
        counts = {e: 0 for e in wanted}
        for message in await mail.messages(since=since):
            for rcpt in message["to"]:
                if rcpt in wanted:
                    counts[rcpt] += 1
        if all(counts.values()) or asyncio.get_running_loop().time() > deadline:
            return counts
        await asyncio.sleep(0.25)
