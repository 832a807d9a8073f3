"""Headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

from playwright.async_api import Browser, BrowserContext, async_playwright

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("Debian's chromium is not installed: run `make install` (apt-get install chromium)")
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    # Playwright gives each launch a new, empty profile of its own. Its driver copies Chromium's own output
    # (a crash's reason) to stderr, which pytest shows beside a failure: a browser that went away in the middle of a
    # test ("Target page, context or browser has been closed", seen once in a loaded CI run) says why.
    with mock.patch.dict(os.environ, {"DEBUG": "pw:browser"}):
        manager = async_playwright()
        pw = await manager.__aenter__()
    try:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
    finally:
        await manager.__aexit__(None, None, None)


@asynccontextmanager
async def own_context(browser: Browser, **options: Any) -> AsyncIterator[BrowserContext]:
    """A context of the browser for one test: its own empty profile (cookies, storage, cache), closed after; what
    a separate launch gives, without launching Chromium again (a module's tests share one: the `browser` fixture)."""
    context = await browser.new_context(**options)
    try:
        yield context
    finally:
        await context.close()
