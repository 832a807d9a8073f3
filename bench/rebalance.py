"""How long a dead instance's partitions sit idle: the time from SIGKILL of one of two notifications instances to
its consumer groups being stable again with the survivor as their one member (it consumes at once after).

Not one of bench/run.py's benchmarks: a tool for docs/scaling.md. It starts a second notifications instance on the
running stack, waits until every group that instance joined has stabilised with both, kills it with SIGKILL and
reads the local Kafka node's log until each of those groups has stabilised with one member (the group coordinator
logs "Stabilized group G generation N with M members"; aiokafka's DescribeGroups cannot decode Kafka 4's answer).

    GROUNDSWELL_PORT_OFFSET=5000 GROUNDSWELL_STATE_DIR=$PWD/.run .venv/bin/python bench/rebalance.py 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import launcher  # noqa: E402

SERVICE = "notifications"
INSTANCE = "rebalance"
JOINED = re.compile(r"^\[([\d-]+ [\d:,]+)\].*member with id notifications-rebalance-\S+ joins group (\S+)")
STABLE = re.compile(r"^\[([\d-]+ [\d:,]+)\].*Stabilized group (\S+) generation \d+ with (\d+) members")


def kafka_log_since(offset: int) -> tuple[list[str], int]:
    path = launcher.log_path("kafka")
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    return data.decode(errors="replace").splitlines(), offset + len(data)


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the node logs local time


def wait_stable(groups: set[str], members: int, offset: int, timeout: float = 120.0) -> tuple[float, int]:
    """The time the last of `groups` stabilised with `members` members (logged after `offset`)."""
    waiting, last = set(groups), 0.0
    deadline = time.monotonic() + timeout
    while waiting:
        if time.monotonic() > deadline:
            raise SystemExit(f"groups {sorted(waiting)} never stabilised with {members} member(s)")
        lines, offset = kafka_log_since(offset)
        for line in lines:
            if (m := STABLE.match(line)) and m[2] in waiting and int(m[3]) == members:
                waiting.discard(m[2])
                last = max(last, stamp(m[1]))
        time.sleep(0.2)
    return last, offset


def one_run() -> float:
    launcher.kill_service(SERVICE, instance=INSTANCE)  # one a failed run left
    offset = launcher.log_path("kafka").stat().st_size
    launcher.start_service(SERVICE, instance=INSTANCE)
    try:
        assert launcher.service_ready(SERVICE, 90, instance=INSTANCE), launcher.log_tail(f"{SERVICE}-{INSTANCE}")
        time.sleep(3)
        lines, _ = kafka_log_since(offset)
        groups = {m[2] for line in lines if (m := JOINED.match(line))}
        assert groups, "the second instance joined no consumer group"
        _, offset = wait_stable(groups, 2, offset)
    except BaseException:
        launcher.kill_service(SERVICE, instance=INSTANCE)
        raise
    killed_at = time.time()
    launcher.kill_service(SERVICE, instance=INSTANCE)
    stable_at, _ = wait_stable(groups, 1, offset)
    return stable_at - killed_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=int, nargs="?", default=3)
    args = parser.parse_args()
    times = []
    for n in range(args.runs):
        seconds = one_run()
        times.append(seconds)
        print(f"run {n + 1}: every group rebalanced onto the survivor {seconds:.1f} s after the SIGKILL", flush=True)
    print(f"median {statistics.median(times):.1f} s, max {max(times):.1f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
