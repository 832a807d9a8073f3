"""Reading the SMTP catcher from tests: wait for the mail a person would find in their inbox."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


class MailCatcher:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    async def mark(self) -> int:
        """The id of the newest message now: pass it as `since` to see only what arrives afterwards."""
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{self.base_url}/api/messages", params={"limit": 1})
            response.raise_for_status()
            newest = response.json()
        newest = newest["messages"] if isinstance(newest, dict) else newest
        return int(newest[0]["id"]) if newest else 0

    async def messages(self, to: str | None = None, *, since: int | None = None) -> list[dict[str, Any]]:
        """Messages (to `to`, newer than message id `since`), oldest first."""
        params: dict[str, Any] = {"order": "asc", "limit": 100_000}
        if to:
            params["to"] = to
        if since is not None:
            params["since"] = str(since)
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.get(f"{self.base_url}/api/messages", params=params)
            response.raise_for_status()
            body = response.json()
        return body["messages"] if isinstance(body, dict) else body

    async def wait_for(self, to: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least `count` messages to `to` arrived; return them (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = await self.messages(to)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.2)
        raise AssertionError(f"expected {count} message(s) to {to} within {timeout}s, got {len(found)}")

    async def settle(self, to: str, seconds: float = 2.0) -> list[dict[str, Any]]:
        """Messages to `to` after giving any duplicate time to arrive."""
        await asyncio.sleep(seconds)
        return await self.messages(to)
