"""Benchmark 8, a mailing to 100,000 members: emails per second accepted by the SMTP catcher, from the scheduled
mailing's start to the last email caught, beside a bare smtplib loop on the same number of connections (the
notifications service's SMTP_CONNECTIONS) sending the same email to the same catcher in the same run; and how
late the scheduled send starts after its time (the mailing's `started_at` minus its `send_at`, and the first email
caught). Beside them, in the notes, the CPU an email costs notifications, membership, Kafka and PostgreSQL (from
/proc, from scheduling to after the baseline): a figure the machine's load moves much less than the rates.

The members are seeded straight into notifications' recipient mirror (confirmed, consenting, with their
suppression key), one local group; the mailing is written, scheduled and sent through the gateway as an organiser
of that group does.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from bench import data
from bench.common import BenchOutcome, MailIndexReader, Result, asyncpg_dsn, cpu_s, launcher, say, service_pid
from services.notifications.mailings_web import NETWORK_TZ
from services.notifications.suppression import Suppressions
from shared.auth import OrganiserScope, issue
from shared.config import Settings

BASE = "/notifications/organise/mailings"
START_TARGET_S = 5.0
SEED_CHUNK = 5_000


async def seed(conn: asyncpg.Connection, n: int, group_id: str, tag: str) -> set[str]:
    """`n` confirmed, consenting members of one group, each with the key the suppression list would use."""
    keys = Suppressions(launcher.secret_key())
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        email = data.member_email(tag, i)
        rows.append((str(uuid.uuid4()), email, f"{data.FIRST_NAMES[i % len(data.FIRST_NAMES)]} Member", True,
                     "confirmed", [group_id], keys.address_key(email), now))
    # In chunks: the mirror's trigger (migration 0013) takes an advisory lock a row, and 100,000 of them in one
    # COPY's transaction run out of PostgreSQL's lock table ("out of shared memory").
    for start in range(0, n, SEED_CHUNK):
        await conn.copy_records_to_table("recipients", records=rows[start:start + SEED_CHUNK], columns=[
            "member_id", "email", "name", "email_consent", "status", "group_ids", "address_key", "updated_at"])
    return {r[1] for r in rows}


def smtplib_baseline(raw: bytes, count: int, connections: int, tag: str) -> float:
    """Emails per second sent by bare smtplib loops, one thread per connection, to the catcher."""
    per = max(1, count // connections)

    def loop(c: int) -> None:
        with smtplib.SMTP(launcher.HOST, launcher.SMTP_CATCHER_SMTP_PORT, timeout=30) as smtp:
            for i in range(per):
                smtp.sendmail("hello@groundswell.localhost", [f"smtplib-{tag}-{c}-{i}@bench.example.org"], raw)

    threads = [threading.Thread(target=loop, args=(c,)) for c in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per * connections / (time.monotonic() - started)


async def cancel_rest(conn: asyncpg.Connection, mailing_id: str | None) -> None:
    if mailing_id:
        await conn.execute("UPDATE mailings SET status = 'sent' WHERE id = $1", mailing_id)
        await conn.execute("UPDATE deliveries SET status = 'suppressed' WHERE kind = 'mailing' AND subject_ref = $1 "
                           "AND status = 'pending'", mailing_id)


async def run(quick: bool, workdir: Path) -> BenchOutcome:
    members = 5_000 if quick else 100_000
    connections = int(launcher.service_env("notifications").get("SMTP_CONNECTIONS")
                      or Settings.model_fields["smtp_connections"].default)
    baseline_count = 2_000 if quick else 10_000
    out = BenchOutcome("Mailing", sizes={"members": f"{members:,}", "SMTP connections": connections,
                                         "smtplib baseline emails": f"{baseline_count:,}"})
    tag, group = data.run_tag(), str(uuid.uuid4())
    conn = await asyncpg.connect(asyncpg_dsn("notifications"))
    headers = {"Authorization": "Bearer " + issue(launcher.secret_key(), OrganiserScope(
        str(uuid.uuid4()), "group", group)), "Origin": launcher.GATEWAY_URL}
    mailing_id = None
    try:
        say(f"mailing: seeding {members:,} members of one group into notifications' mirror")
        emails = await seed(conn, members, group, tag)
        async with httpx.AsyncClient(base_url=launcher.GATEWAY_URL, timeout=60) as client:
            made = await client.post(BASE, headers=headers, data={
                "action": "save", "subject": f"Bench mailing {tag}",
                "body": "# Hello {first_name}\n\nRead [our plan](https://example.org/plan).\n\nhttps://example.org/join"})
            if made.status_code != 303:
                raise RuntimeError(f"saving the mailing answered {made.status_code}: {made.text[:200]}")
            mailing_id = made.headers["location"].split("/mailings/")[1].split("?")[0]
            send_at = (datetime.now(NETWORK_TZ) + timedelta(seconds=8)).replace(microsecond=0)
            sent = await client.post(f"{BASE}/{mailing_id}/send", headers=headers,
                                     data={"when": "later", "send_at": send_at.replace(tzinfo=None).isoformat()})
            if sent.status_code != 303:
                raise RuntimeError(f"scheduling the mailing answered {sent.status_code}: {sent.text[:200]}")
        reader = MailIndexReader()
        # CPU of the processes an email costs something in, from before the send to after the baseline (by then
        # membership has consumed the mailing's NotificationSent too): a figure the machine's load moves less.
        pids = {name: service_pid(name) for name in ("notifications", "membership", "kafka", "postgres")}
        cpu_before = {name: cpu_s(pid, children=name == "postgres") for name, pid in pids.items()}
        say(f"mailing: scheduled for {send_at:%H:%M:%S}; waiting for every email at the catcher")
        caught: dict[str, float] = {}
        sample_id = None
        window = 120 if quick else 180
        deadline = time.monotonic() + window + 10
        while len(caught) < members and time.monotonic() < deadline:
            for row in reader.read_new():
                for rcpt in row.get("rcpt_tos", []):
                    if rcpt.lower() in emails:
                        caught.setdefault(rcpt.lower(), float(row["received_at"]))
                        sample_id = sample_id or row["id"]
            await asyncio.sleep(0.5)
        started_at = await conn.fetchval("SELECT started_at FROM mailings WHERE id = $1", mailing_id)
        if not caught or started_at is None:
            raise RuntimeError("the mailing did not start or no email reached the catcher")
        late = (started_at - send_at.astimezone(UTC)).total_seconds()
        times = sorted(caught.values())
        first_late = times[0] - send_at.timestamp()
        out.add(Result("scheduled send started after its time", late, "s", target=f"<= {START_TARGET_S:.0f} s",
                       met=late <= START_TARGET_S, higher_is_better=False,
                       note=f"first email caught {first_late:.1f} s after its time"))
        if len(caught) < members:
            await cancel_rest(conn, mailing_id)
            out.notes.append(f"measured over the first {window} s: {len(caught):,} of {members:,} caught, the rest "
                             "cancelled")
        rate = len(caught) / max(times[-1] - started_at.timestamp(), 1e-6)
        async with httpx.AsyncClient(base_url=launcher.SMTP_CATCHER_URL, timeout=30) as client:
            raw = (await client.get(f"/api/messages/{sample_id}/raw")).content
        out.sizes["email size"] = f"{len(raw):,} bytes"
        say(f"mailing: smtplib baseline, {baseline_count:,} emails on {connections} connections")
        baseline = await asyncio.to_thread(smtplib_baseline, raw, baseline_count, connections, tag)
        await asyncio.sleep(2)  # the last NotificationSent through the relay and membership
        per_email = {name: (cpu_s(pid, children=name == "postgres") - cpu_before[name]) * 1000 / len(caught)
                     for name, pid in pids.items()}
        out.notes.append("CPU an email caught (from scheduling to after the baseline): " + ", ".join(
            f"{name} {ms:.2f} ms" for name, ms in per_email.items()) + " (postgres: every backend of the stack's)")
        out.add(Result("mailing, emails accepted by the catcher", rate, "emails/s",
                       f"bare smtplib on {connections} connections", baseline, target=">= 0.5 of the baseline",
                       met=rate / baseline >= 0.5, note="from the mailing's start to the last email caught"))
    finally:
        await conn.execute("DELETE FROM recipients WHERE group_ids @> ARRAY[$1]::text[]", group)
        if mailing_id:
            await cancel_rest(conn, mailing_id)
            await conn.execute("DELETE FROM deliveries WHERE kind = 'mailing' AND subject_ref = $1", mailing_id)
        await conn.close()
    return out
