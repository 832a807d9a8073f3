"""Benchmark 1, join ingest: sustained joins per second through the gateway, each stored with its outbox row.

Baselines, same run, same client: (a) a bare FastAPI endpoint (bench/bare_app.py, one uvicorn process with the
services' settings) behind an nginx started from the gateway's own configuration with only the upstream
changed; (b) raw asyncpg transactions inserting the rows a join stores (member, consent record, data key, two
outbox rows) into copies of membership's tables, on as many connections as the service's pool.
Benchmark 6 (memory) samples every service's RSS while this load runs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import data, load
from bench.common import (
    REPO_ROOT,
    BenchOutcome,
    PySpy,
    Result,
    asyncpg_dsn,
    launcher,
    percentile,
    rss_mib,
    say,
    service_pid,
)

CONCURRENCY = 16
POOL_CONNECTIONS = 10  # shared/config.py database_pool_size


def _wait_http(url: str, timeout: float = 20.0) -> None:
    if not launcher.wait_http(url, timeout):
        raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextmanager
def bare_endpoint_behind_nginx(workdir: Path) -> Iterator[dict[str, Any]]:
    """The bare app on a free port and an nginx with the gateway's configuration routing /join to it."""
    app_port, nginx_port = launcher.free_port(), launcher.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    log = (workdir / "bare.log").open("ab")
    app = subprocess.Popen([sys.executable, "-m", "bench.bare_app", str(app_port)], cwd=REPO_ROOT,
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    conf = launcher.render_nginx_conf("local")
    membership = f"server {launcher.HOST}:{launcher.SERVICE_PORTS['membership']} "
    assert membership in conf, "the gateway configuration changed shape: update bench/join_ingest.py"
    conf = conf.replace(membership, f"server {launcher.HOST}:{app_port} ")
    conf = conf.replace(f"listen {launcher.HOST}:{launcher.GATEWAY_PORT};", f"listen {launcher.HOST}:{nginx_port};")
    conf = conf.replace(str(launcher.NGINX_DIR / "nginx.pid"), str(workdir / "nginx.pid"))
    conf = conf.replace(str(launcher.NGINX_DIR / "tmp"), str(workdir / "tmp"))
    (workdir / "nginx.conf").write_text(conf)
    gateway = subprocess.Popen(
        [launcher.nginx_binary(), "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr",
         "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_http(f"http://{launcher.HOST}:{app_port}/readyz")
        _wait_http(f"http://{launcher.HOST}:{nginx_port}/_gateway/healthz")
        yield {"app_url": f"http://{launcher.HOST}:{app_port}", "url": f"http://{launcher.HOST}:{nginx_port}",
               "app_pid": app.pid}
    finally:
        for proc in (gateway, app):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


class RssSampler:
    """The highest RSS of some processes, sampled every half second while a load runs."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.peak = {name: rss_mib(pid) for name, pid in pids.items()}
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mib(pid))
            await asyncio.sleep(0.5)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


# -- the raw PostgreSQL baseline --------------------------------------------------------------------------------
RAW_SCHEMA = "bench_raw"
RAW_TABLES = ("members", "consent_records", "subject_keys", "outbox")


async def raw_postgres_joins(seconds: float, connections: int = POOL_CONNECTIONS) -> tuple[float, int]:
    """Transactions per second inserting what one join stores, into copies of membership's tables (with their
    indexes and constraints, and the outbox's NOTIFY trigger on a channel nobody listens to)."""
    dsn = asyncpg_dsn("membership")
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE; CREATE SCHEMA {RAW_SCHEMA}")
        for table in RAW_TABLES:
            await admin.execute(f"CREATE TABLE {RAW_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)")
        await admin.execute(
            f"ALTER TABLE {RAW_SCHEMA}.consent_records ADD FOREIGN KEY (member_id) "
            f"REFERENCES {RAW_SCHEMA}.members (id) ON DELETE CASCADE")
        await admin.execute(
            f"CREATE FUNCTION {RAW_SCHEMA}.notify() RETURNS trigger AS $$ BEGIN PERFORM pg_notify('bench_outbox', ''); "
            f"RETURN NULL; END; $$ LANGUAGE plpgsql")
        await admin.execute(f"CREATE TRIGGER notify AFTER INSERT ON {RAW_SCHEMA}.outbox FOR EACH STATEMENT "
                            f"EXECUTE FUNCTION {RAW_SCHEMA}.notify()")
        payload = os.urandom(1100)  # about a MemberJoined envelope
        stop_at = time.monotonic() + seconds
        done = 0

        async def worker() -> None:
            nonlocal done
            conn = await asyncpg.connect(dsn)
            try:
                while time.monotonic() < stop_at:
                    mid, now = str(uuid.uuid4()), datetime.now(UTC)
                    async with conn.transaction():
                        await conn.execute(
                            f"INSERT INTO {RAW_SCHEMA}.members (id, email_normalised, name, postcode, region_id, "
                            "engagement_level, interests, status, email_consent, source, joined_at, updated_at) "
                            "VALUES ($1, $2, 'Bench Member', 'B1 1AA', NULL, 'informed', '{}', 'pending', true, "
                            "'join-form', $3, $3) ON CONFLICT (email_normalised) DO NOTHING",
                            mid, f"raw-{mid}@bench.example.org", now)
                        await conn.execute(
                            f"INSERT INTO {RAW_SCHEMA}.consent_records (id, member_id, channel, granted, "
                            "wording_version, source, ip_hash, recorded_at) VALUES ($1, $2, 'email', true, "
                            "'email-2026-11', 'join-form', 'x', $3)", str(uuid.uuid4()), mid, now)
                        await conn.execute(f"INSERT INTO {RAW_SCHEMA}.subject_keys (key_id, key) VALUES ($1, $2)",
                                           mid, os.urandom(32))
                        await conn.executemany(
                            f"INSERT INTO {RAW_SCHEMA}.outbox (event_id, event_type, topic, key, shard, payload, "
                            "headers) VALUES ($1, $2, $3, $4, 1, $5, '{}')",
                            [(uuid.uuid4(), "SubjectKeyIssued", "membership.subject-keys", mid, payload[:200]),
                             (uuid.uuid4(), "MemberJoined", "membership.members", mid, payload)])
                    done += 1
            finally:
                await conn.close()

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.monotonic() - started), done
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")
        await admin.close()


async def stored_joins(tag: str) -> tuple[int, int]:
    """(members stored, of them with a MemberJoined outbox row) for this run's addresses."""
    conn = await asyncpg.connect(asyncpg_dsn("membership"))
    try:
        like = f"bench-{tag}-%"
        members = await conn.fetchval("SELECT count(*) FROM members WHERE email_normalised LIKE $1", like)
        with_outbox = await conn.fetchval(
            "SELECT count(*) FROM members m WHERE m.email_normalised LIKE $1 AND EXISTS "
            "(SELECT 1 FROM outbox o WHERE o.key = m.id AND o.event_type = 'MemberJoined')", like)
        return int(members), int(with_outbox)
    finally:
        await conn.close()


async def run(quick: bool, workdir: Path, memory: BenchOutcome | None = None, profile: bool = False) -> BenchOutcome:
    seconds = 10.0 if quick else 20.0
    out = BenchOutcome("Join ingest", sizes={"seconds per measurement": seconds, "concurrency": CONCURRENCY,
                                             "database connections (raw baseline)": POOL_CONNECTIONS})
    tag = data.run_tag()
    pids = {name: service_pid(name) for name in launcher.SERVICES}
    idle = {name: rss_mib(pid) for name, pid in pids.items()}

    with bare_endpoint_behind_nginx(workdir / "bare") as bare:
        bare_idle = rss_mib(bare["app_pid"])
        say(f"join ingest: bare endpoint behind nginx, {CONCURRENCY} clients, {seconds:.0f} s")
        with RssSampler({"bare": bare["app_pid"]}) as bare_rss:
            bare_load = await load.closed_loop(bare["url"], data.join_request(tag + "-bare"),
                                               concurrency=CONCURRENCY, seconds=seconds)
    say(f"join ingest: the real join through the gateway, {CONCURRENCY} clients, {seconds:.0f} s")
    with RssSampler(pids) as services_rss, PySpy(pids["membership"], workdir / "join-membership.txt", profile):
        real = await load.closed_loop(launcher.GATEWAY_URL, data.join_request(tag), concurrency=CONCURRENCY,
                                      seconds=seconds)
    say(f"join ingest: raw PostgreSQL transactions on {POOL_CONNECTIONS} connections, {seconds:.0f} s")
    raw_rate, _ = await raw_postgres_joins(seconds)

    members, with_outbox = await stored_joins(tag)
    accepted = real.ok(303)
    out.notes.append(
        f"{accepted} joins answered 303 in the measured window ({real.count} requests, {real.errors} errors); "
        f"{members} members of this run stored, {with_outbox} of them with their MemberJoined outbox row "
        "(the count includes the warm-up's joins)")
    lat = real.latencies_ms()
    bare_p50 = percentile(bare_load.latencies_ms(), 50)
    out.notes.append(f"join response time under this load: p50 {percentile(lat, 50):.0f} ms, "
                     f"p99 {percentile(lat, 99):.0f} ms; bare endpoint p50 {bare_p50:.1f} ms")
    bare_rate = bare_load.rate(303)
    rate = real.rate(303)
    out.add(Result("join ingest through the gateway", rate, "joins/s", "bare FastAPI endpoint behind the same nginx",
                   bare_rate, target=">= 1/3 of the bare endpoint", met=rate >= bare_rate / 3))
    out.add(Result("join ingest through the gateway", rate, "joins/s", "raw asyncpg transactions, same rows",
                   raw_rate, "transactions/s"))
    if memory is not None:
        memory.sizes["load"] = f"benchmark 1's join load ({CONCURRENCY} clients, {seconds:.0f} s)"
        for name in launcher.SERVICES:
            memory.add(Result(f"{name} RSS under join load", services_rss.peak[name], "MiB", f"{name} idle",
                              idle[name], "MiB"))
        memory.add(Result("bare endpoint RSS under the same load", bare_rss.peak["bare"], "MiB", "bare endpoint idle",
                          bare_idle, "MiB"))
        memory.add(Result("membership RSS under join load", services_rss.peak["membership"], "MiB",
                          "bare endpoint under the same load", bare_rss.peak["bare"], "MiB"))
    return out
