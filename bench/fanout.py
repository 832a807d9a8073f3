"""Benchmark 4, fan-out: a meeting announcement to every member of a local group, in emails per second accepted by
the SMTP catcher, from the meeting's creation through the gateway to the last email caught.

The group's members are seeded straight into notifications' recipient mirror (confirmed, consenting), as
tests/notifications/test_announcements.py does. Baseline, same run: a bare smtplib loop on one connection sending
the same announcement (its raw bytes, fetched from the catcher) to the same catcher.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from bench import data
from bench.common import BenchOutcome, MailIndexReader, PySpy, Result, asyncpg_dsn, launcher, say, service_pid


def organiser_headers() -> dict[str, str]:
    from shared.auth import OrganiserScope, issue

    scope = OrganiserScope(organiser_id=str(uuid.uuid4()), scope_type="network", scope_id=None)
    return {"Authorization": f"Bearer {issue(launcher.secret_key(), scope)}"}


def meeting_for_group(group_id: str) -> dict[str, str]:
    start = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    return {"title": f"Bench meeting {uuid.uuid4().hex[:6]}", "kind": "online", "scope_type": "group",
            "scope_id": group_id, "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=1)).isoformat(),
            "online_url": "https://meet.example.org/bench"}


async def cancel_rest(conn: asyncpg.Connection, meeting_id: str | None) -> None:
    """Stop an announcement still going out: no more batches queued, the queued ones not sent."""
    if meeting_id:
        await conn.execute("UPDATE announcements SET status = 'cancelled' WHERE meeting_id = $1", meeting_id)
        await conn.execute("UPDATE deliveries SET status = 'suppressed' WHERE subject_ref = $1 AND status = 'pending'",
                           meeting_id)


def smtplib_loop(raw: bytes, count: int, tag: str) -> float:
    """Emails per second sent by a plain smtplib loop on one connection to the catcher."""
    sender = "hello@groundswell.localhost"
    with smtplib.SMTP(launcher.HOST, launcher.SMTP_CATCHER_SMTP_PORT, timeout=30) as smtp:
        started = time.monotonic()
        for i in range(count):
            smtp.sendmail(sender, [f"smtplib-{tag}-{i}@bench.example.org"], raw)
        return count / (time.monotonic() - started)


async def run(quick: bool, workdir: Path, profile: bool = False) -> BenchOutcome:
    members = 10_000 if quick else 100_000
    baseline_count = 2_000 if quick else 10_000
    out = BenchOutcome("Fan-out", sizes={"members": f"{members:,}", "smtplib baseline emails": f"{baseline_count:,}"})
    tag, group = data.run_tag(), str(uuid.uuid4())
    conn = await asyncpg.connect(asyncpg_dsn("notifications"))
    meeting_id = None
    try:
        say(f"fan-out: seeding {members:,} members of one group into notifications' mirror")
        emails = {e.lower() for e in await data.seed_recipients(conn, members, group, tag)}
        reader = MailIndexReader()
        async with httpx.AsyncClient(base_url=launcher.GATEWAY_URL, timeout=30) as client:
            created = time.time()
            response = await client.post("/meetings", json=meeting_for_group(group), headers=organiser_headers())
            response.raise_for_status()
            meeting_id = response.json().get("id") or response.json().get("meeting_id")
        say("fan-out: meeting created; waiting for every announcement at the catcher")
        spy = PySpy(service_pid("notifications"), workdir / "fanout-notifications.txt", profile).__enter__()
        caught: dict[str, float] = {}
        sample_id = None
        window = 120 if quick else 150
        deadline = time.monotonic() + window
        last_progress, last_count = time.monotonic(), 0
        while len(caught) < members and time.monotonic() < deadline:
            for row in reader.read_new():
                for rcpt in row.get("rcpt_tos", []):
                    if rcpt.lower() in emails:
                        caught.setdefault(rcpt.lower(), float(row["received_at"]))
                        sample_id = sample_id or row["id"]
            if len(caught) != last_count:
                last_progress, last_count = time.monotonic(), len(caught)
            elif time.monotonic() - last_progress > 60:
                break  # nothing new for a minute: report what arrived
            await asyncio.sleep(0.5)
        spy.__exit__(None, None, None)
        if len(caught) < members:
            await cancel_rest(conn, meeting_id)
            whole = members / max(len(caught), 1) * window
            out.notes.append(f"measured over the first {window} s; the rest of the announcement was then cancelled "
                             f"(at this rate all {members:,} would take {whole:.0f} s)")
        if not caught:
            raise RuntimeError("no announcement reached the catcher")
        times = sorted(caught.values())
        rate = len(caught) / (times[-1] - created)
        steady = len(caught) / max(times[-1] - times[0], 1e-6)
        out.notes.append(f"{len(caught):,} of {members:,} announcements caught; first {times[0] - created:.1f} s after "
                         f"the meeting was created, last {times[-1] - created:.1f} s; {steady:.0f}/s between the "
                         "first and the last")
        async with httpx.AsyncClient(base_url=launcher.SMTP_CATCHER_URL, timeout=30) as client:
            raw = (await client.get(f"/api/messages/{sample_id}/raw")).content
        out.sizes["announcement size"] = f"{len(raw):,} bytes"
        say(f"fan-out: smtplib baseline, {baseline_count:,} emails of {len(raw):,} bytes on one connection")
        baseline = await asyncio.to_thread(smtplib_loop, raw, baseline_count, tag)
        out.add(Result("announcement fan-out", rate, "emails/s", "bare smtplib loop, same catcher", baseline,
                       note="meeting created to last email caught"))
    finally:
        await conn.execute("DELETE FROM recipients WHERE $1 = ANY(group_ids)", group)
        if meeting_id:
            await cancel_rest(conn, meeting_id)
            await conn.execute("DELETE FROM deliveries WHERE subject_ref = $1 AND status IN ('sent', 'suppressed')",
                               meeting_id)
        await conn.close()
    return out
