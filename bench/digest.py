"""Benchmark 5, digests: `python -m services.notifications send-digests --now` for every organiser's weekly digest,
over an activity log of a network of that many members, in seconds.

The network (regions, groups, organisers subscribed to their group's, region's or the network's digest, and the
activity log: every member's join over two years with actions, meetings and RSVPs in proportion) is seeded into
notifications' tables (bench/data.py seed_digest_world) and removed afterwards. The issue asks for seconds only;
as a same-run reference the benchmark also times one pass over the whole activity log in SQL.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from bench import data
from bench.common import REPO_ROOT, BenchOutcome, Result, asyncpg_dsn, say, service_env


def send_digests(workdir: Path, profile: bool = False, limit_s: float | None = None) -> tuple[int, float, bool]:
    """Run the command; (digests built as it says, seconds, whether it was stopped at `limit_s`)."""
    command = [sys.executable, "-m", "services.notifications", "send-digests", "--now"]
    if profile:
        command = [sys.executable, "-m", "pyinstrument", "--renderer", "text", "--outfile",
                   str(workdir / "digest-profile.txt"), "-m", "services.notifications", "send-digests", "--now"]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=service_env("notifications"), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return 0, time.monotonic() - started, True
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"send-digests failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    match = re.search(r"(\d+) digest\(s\) built", done.stdout)
    return (int(match.group(1)) if match else 0), seconds, False


async def run(quick: bool, workdir: Path, profile: bool = False) -> BenchOutcome:
    organisers, members = (100, 100_000) if quick else (1_000, 1_000_000)
    out = BenchOutcome("Digests", sizes={"organisers": f"{organisers:,}", "members": f"{members:,}"})
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    conn = await asyncpg.connect(asyncpg_dsn("notifications"))
    world = None
    try:
        say(f"digest: seeding {organisers:,} organisers and the activity of {members:,} members")
        started = time.monotonic()
        world = await data.seed_digest_world(conn, organisers=organisers, members=members)
        await conn.execute("ANALYZE activity")
        rows = await conn.fetchval("SELECT count(*) FROM activity")
        out.notes.append(f"seeded in {time.monotonic() - started:.0f} s; the activity log holds {rows:,} rows")
        started = time.monotonic()
        await conn.fetch("SELECT kind, count(*), max(occurred_at) FROM activity GROUP BY kind")
        scan = time.monotonic() - started
        say("digest: send-digests --now")
        limit = 120.0 if quick else 150.0
        built, seconds, stopped = await asyncio.to_thread(send_digests, workdir, profile, limit)
        note = ""
        if stopped:  # each digest commits on its own: count those built and extrapolate
            built = await conn.fetchval("SELECT count(*) FROM digests WHERE organiser_id = ANY($1)",
                                        world["organisers"])
            out.notes.append(f"stopped after {limit:.0f} s with {built:,} of {organisers:,} digests built; the figure "
                             "is extrapolated to all of them")
            seconds = seconds * organisers / max(built, 1)
            note = "extrapolated"
        else:
            out.notes.append(f"{built:,} digests built")
        out.add(Result("weekly digests for every organiser", seconds, "s", "one SQL pass over the activity log", scan,
                       "s", note=f"{seconds / organisers * 1000:.0f} ms a digest" + (f", {note}" if note else ""),
                       higher_is_better=False))
    finally:
        if world is not None:
            await data.remove_digest_world(conn, world)
        await conn.close()
    return out
