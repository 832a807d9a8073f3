"""axe-core (from the npm registry, fetched once into the state directory's cache) injected into a page, for the
accessibility violations a person using assistive technology would meet."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from deploy.local import launcher

AXE_VERSION = "4.14.1"


def axe_script() -> Path:
    """axe.min.js of AXE_VERSION, packed with npm the first time it is needed."""
    home = Path(launcher.STATE_DIR) / "cache" / f"axe-core-{AXE_VERSION}"
    script = home / "package" / "axe.min.js"
    if not script.exists():
        home.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "pack", f"axe-core@{AXE_VERSION}", "--silent"], cwd=home, capture_output=True,
                              text=True, timeout=300, check=True)
        with tarfile.open(home / done.stdout.strip().splitlines()[-1]) as packed:
            packed.extractall(home, filter="data")
    return script


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """What axe-core finds on the page as it is now: rule id, impact and how many elements, per violation."""
    await page.add_script_tag(path=str(axe_script()))
    found = await page.evaluate("async () => (await axe.run(document)).violations"
                                ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))")
    return list(found)
