"""What every benchmark shares: the stack it runs against, results beside their baselines, small helpers.

Importing this module fixes which stack the benchmarks use. Unless GROUNDSWELL_STATE_DIR is set, they run on
a stack of their own (ports shifted by 5000, state in .run/bench/), never on the default one that `make test`
and CI use: benchmarks seed hundreds of thousands of rows and stop and restart services.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
if not os.environ.get("GROUNDSWELL_STATE_DIR"):
    os.environ["GROUNDSWELL_STATE_DIR"] = str(REPO_ROOT / ".run" / "bench")
    os.environ.setdefault("GROUNDSWELL_PORT_OFFSET", "5000")
    os.environ.setdefault("GROUNDSWELL_CACHE", str(REPO_ROOT / ".run" / "cache"))  # Kafka's jars, as `make up` has them

from deploy.local import launcher  # noqa: E402  (after the environment above is set)

SERVICES = launcher.SERVICES


@dataclass
class Result:
    """One figure of a benchmark, with the baseline measured in the same run and the issue's target."""

    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    baseline_unit: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]

    def line(self) -> str:
        text = f"{self.name}: {fmt(self.value)} {self.unit}"
        if self.baseline is not None:
            text += f" | {self.baseline_name or 'baseline'}: {fmt(self.baseline)} {self.baseline_unit or self.unit}"
            text += f" | ratio {self.ratio:.3f}" if self.ratio is not None else " | ratio -"
        if self.target:
            verdict = "" if self.met is None else (" MET" if self.met else " NOT MET")
            text += f" | target {self.target}{verdict}"
        if self.note:
            text += f"  ({self.note})"
        return text


@dataclass
class BenchOutcome:
    """What one benchmark reports: its results, the sizes it ran with, and notes for the record."""

    title: str
    results: list[Result] = field(default_factory=list)
    sizes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: Result) -> Result:
        self.results.append(result)
        print("  " + result.line(), flush=True)
        return result


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def asyncpg_dsn(service: str) -> str:
    return launcher.database_url(service).replace("postgresql+asyncpg://", "postgresql://", 1)


def service_pid(name: str) -> int | None:
    record = launcher.read_record(name)
    return record.pid if record else None


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command's name (the state first); [] if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def cpu_s(pid: int | None, *, children: bool = False) -> float:
    """CPU time (user and system) a process has used so far, in seconds; 0 if it is gone. With `children`, that of
    its children too, live (PostgreSQL's backends) and ended (counted in its own stat once reaped)."""
    fields = _stat(pid) if pid else []
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (child := _stat(int(entry.name))) and child[1] == str(pid):
                ticks += sum(int(f) for f in child[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int | None) -> float:
    """Resident memory of a process (VmRSS of /proc/<pid>/status), in MiB; 0 if it is gone."""
    if not pid:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def service_env(service: str) -> dict[str, str]:
    """The environment a service's own commands (rebuild-reporting, send-digests) get from the launcher."""
    env = launcher.service_env(service)
    env["LOG_LEVEL"] = "WARNING"
    return env


class PySpy:
    """`py-spy record` of a running process for as long as the block lasts (raw collapsed stacks), and a short
    summary of where its samples fell (--profile)."""

    def __init__(self, pid: int | None, out: Path, enabled: bool = True) -> None:
        self.pid, self.out, self.enabled = pid, out, enabled and bool(pid)
        self._proc: Any = None

    def __enter__(self) -> PySpy:
        import subprocess

        if self.enabled:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(self.pid), "-f", "raw",
                 "-o", str(self.out), "--nonblocking", "-r", "50"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            self._proc.wait(30)
            say(f"profile of pid {self.pid} in {self.out}:\n" + top_frames(self.out))


def top_frames(path: Path, n: int = 15) -> str:
    """Groundswell's own functions most often on the stack in py-spy's raw output (share of the samples)."""
    from collections import Counter

    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return "  (no profile written)"
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            if ("(services/" in frame or "(shared/" in frame) and "__main__" not in frame and "cli.py" not in frame:
                inclusive[frame] += int(count)
    return "\n".join(f"  {c / max(total, 1):5.0%}  {frame}" for frame, c in inclusive.most_common(n))


def mail_index_path() -> Path:
    return launcher.MAIL_DIR / "index.jsonl"


class MailIndexReader:
    """Follows the SMTP catcher's index.jsonl (one line per caught message: rcpt_tos, received_at) from where
    it was opened, so a benchmark sees only the mail that arrived since. Cheaper than the JSON API, which
    parses every message."""

    def __init__(self) -> None:
        path = mail_index_path()
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        import json

        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        rows = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "id" in row:
                rows.append(row)
        return rows
