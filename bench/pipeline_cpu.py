"""Where the CPU of one join goes, end to end: the join form through the gateway to the welcome email.

Not one of bench/run.py's benchmarks: a tool for benchmark 2 (join to welcome email at 200 joins/s). It sends
N joins through the gateway at a steady rate, waits until every welcome email has reached the SMTP catcher,
and reports the CPU (utime + stime, of each process and its live children, plus what they reaped) that every
part of the stack spent per join: each service, PostgreSQL (all its backends), Kafka, nginx, the SMTP catcher,
and this load generator; idle CPU over as long (measured first) is subtracted. On a machine of C cores the
pipeline cannot sustain more than C * 1000 / (total ms per join) joins a second, whatever the latency.

It also reports the throughput end to end: welcomes caught per second from the first join sent to the last welcome
caught. Sent faster than the stack can go (the default 50/s here), that is what it sustains. `--instances 2` runs
every service twice (GROUNDSWELL_INSTANCES, docs/scaling.md) for the run, counts both instances' CPU, and stops the
extra ones afterwards.

    GROUNDSWELL_PORT_OFFSET=6000 GROUNDSWELL_STATE_DIR=$PWD/.run/t3 .venv/bin/python bench/pipeline_cpu.py 1500 50
    ... bench/pipeline_cpu.py 1500 50 --instances 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import data, load  # noqa: E402
from bench.common import MailIndexReader, launcher, percentile, service_pid  # noqa: E402
from bench.latency import wait_for_welcomes  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PARTS = (*launcher.SERVICES, "postgres", "kafka", "gateway", "smtp_catcher")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU s, reaped children's CPU s) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def tree_cpu_s(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each root's process tree (live descendants, and what the root reaped)."""
    stats = {pid: st for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()) if (st := _stat(pid))}
    owner: dict[int, str] = {pid: name for name, pid in roots.items()}

    def find(pid: int) -> str | None:
        seen = []
        while pid not in owner and pid in stats and pid > 1:
            seen.append(pid)
            pid = stats[pid][0]
        name = owner.get(pid)
        for p in seen:
            owner[p] = name  # type: ignore[assignment]
        return name

    totals = dict.fromkeys(roots, 0.0)
    for pid, (_, own, _) in stats.items():
        name = find(pid)
        if name:
            totals[name] += own
    for name, pid in roots.items():
        if pid in stats:
            totals[name] += stats[pid][2]
    return totals


def roots() -> dict[str, int]:
    extra = [name for service in launcher.SERVICES for name in launcher.service_instances(service) if name != service]
    found = {name: pid for name in (*PARTS, *sorted(extra)) if (pid := service_pid(name))}
    found["load generator"] = os.getpid()
    return found


def start_instances(count: int) -> list[tuple[str, str]]:
    """Every service `count` times (the launcher's GROUNDSWELL_INSTANCES, the gateway reloaded); the extra
    instances this started, as (service, instance)."""
    before = {n for s in launcher.SERVICES for n in launcher.service_instances(s)}
    os.environ["GROUNDSWELL_INSTANCES"] = ",".join(f"{s}={count}" for s in launcher.SERVICES)
    launcher.ensure_up(services=True)
    return [(s, instance) for s in launcher.SERVICES for instance, _ in launcher.extra_instances(s)
            if f"{s}-{instance}" not in before]  # fmt: skip


async def main(n: int, rate: float, idle_s: float, instances: int = 1) -> None:
    started = start_instances(instances) if instances > 1 else []
    try:
        await measure(n, rate, idle_s)
    finally:
        for service, instance in started:
            launcher.stop_service(service, instance)
        if started:
            launcher.reload_gateway()


async def measure(n: int, rate: float, idle_s: float) -> None:
    pids = roots()
    missing = [p for p in PARTS if p not in pids]
    if missing:
        raise SystemExit(f"not running on this stack: {', '.join(missing)}")
    start = tree_cpu_s(pids)
    await asyncio.sleep(idle_s)
    idle = {k: (v - start[k]) / idle_s for k, v in tree_cpu_s(pids).items()}

    tag = data.run_tag()
    reader = MailIndexReader()
    reader.read_new()
    before, t0, first_sent = tree_cpu_s(pids), time.monotonic(), time.time()
    result = await load.open_loop(launcher.GATEWAY_URL, data.join_request(tag), rate=rate, seconds=n / rate)
    answered = {data.member_email(tag, i): t for i, t, s in zip(result.indexes, result.answered, result.statuses,
                                                                 strict=True) if s == 303}
    received = await wait_for_welcomes(reader, answered, timeout=max(120.0, n / rate * 8))
    after, elapsed = tree_cpu_s(pids), time.monotonic() - t0
    joins = len(answered)
    latencies = [(received[e] - answered[e]) * 1000 for e in received]
    print(f"{joins} joins accepted of {n} at {rate:.0f}/s ({result.ok(303) / result.seconds:.0f}/s achieved), "
          f"{len(received)} welcomes caught in {elapsed:.1f} s; welcome latency p50 {percentile(latencies, 50):.0f} "
          f"ms, p99 {percentile(latencies, 99):.0f} ms")
    if received:
        print(f"end to end: {len(received) / (max(received.values()) - first_sent):.1f} joins/s (welcomes caught per "
              f"second from the first join sent to the last welcome caught)")
    print(f"{'part':<16} {'ms CPU per join':>16}")
    total = 0.0
    for name in pids:
        per_join = max(0.0, after[name] - before[name] - idle[name] * elapsed) / max(1, joins) * 1000
        total += per_join
        print(f"{name:<16} {per_join:>16.2f}")
    cores = os.cpu_count() or 1
    print(f"{'total':<16} {total:>16.2f}   -> at most {cores * 1000 / total:.0f} joins/s end to end on {cores} cores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("joins", type=int, nargs="?", default=1500)
    parser.add_argument("rate", type=float, nargs="?", default=50.0)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured first")
    parser.add_argument("--instances", type=int, default=1, help="instances of every service for the run")
    args = parser.parse_args()
    asyncio.run(main(args.joins, args.rate, args.idle, args.instances))
