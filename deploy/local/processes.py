"""The processes the launcher starts: their pid files and records, starting one in its own session with
its output in .run/logs/<name>.log, telling ours from a recycled pid, stopping a whole process tree; the
one-off commands (migrations, topics) run to completion; the lock that keeps two launchers apart.

Every process runs in its own session (so a terminal's Ctrl-C reaches only the launcher, which then
stops everything in order) and is recorded in ``.run/pids/<name>.pid`` (the pid) and ``<name>.json``
(command, port, process start time, so a recycled pid is never mistaken for ours). Stopping sends
SIGTERM (SIGINT to PostgreSQL: fast shutdown), waits, then SIGKILLs the whole process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.local.config import HOST, LOG_DIR, PID_DIR, REPO_ROOT, STATE_DIR, STOP_TIMEOUTS, LauncherError, rel, say

_lock_depth = threading.local()
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # processes this Python process spawned (to reap)
_tie_children_to_launcher = False  # `run` mode: children get SIGTERM if the launcher dies


def tie_children_to_launcher() -> None:
    """From now on, every process started gets SIGTERM when the launcher dies (`run` mode)."""
    global _tie_children_to_launcher
    _tie_children_to_launcher = True


def log_path(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def log_tail(name: str, lines: int = 30) -> str:
    """The last lines of a component's log, for error messages."""
    path = log_path(name)
    if not path.exists():
        return f"(no log at {path})"
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode("utf-8", "replace")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


@contextlib.contextmanager
def launcher_lock() -> Iterator[None]:
    """Serialise launchers (two `make test` at once); re-entrant within one process."""
    depth = getattr(_lock_depth, "n", 0)
    if depth:
        _lock_depth.n = depth + 1
        try:
            yield
        finally:
            _lock_depth.n -= 1
        return
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "launcher.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another launcher is starting or stopping Groundswell; waiting for it ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        _lock_depth.n = 1
        try:
            yield
        finally:
            _lock_depth.n = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class ProcessRecord:
    """What the launcher remembers about a process it started (the <name>.json next to the pid file)."""

    name: str
    pid: int
    kind: str  # kafka | postgres | smtp_catcher | gateway | service
    command: list[str]
    port: int | None = None
    service: str = ""
    instance: str = ""
    started_at: float = field(default_factory=time.time)
    proc_start: int = 0  # field 22 of /proc/<pid>/stat: tells our process from a recycled pid
    log: str = ""

    @property
    def pid_file(self) -> Path:
        return PID_DIR / f"{self.name}.pid"

    @property
    def meta_file(self) -> Path:
        return PID_DIR / f"{self.name}.json"

    def save(self) -> None:
        PID_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(self.meta_file)
        self.pid_file.write_text(f"{self.pid}\n")

    def forget(self) -> None:
        """Remove the pid files, unless they meanwhile describe a newer process of the same name."""
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            if int(json.loads(self.meta_file.read_text())["pid"]) != self.pid:
                return
        for path in (self.pid_file, self.meta_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.rsplit(")", 1)[1].split()


def _proc_start(pid: int) -> int:
    stat = _proc_stat(pid)
    return int(stat[19]) if stat else 0


def _reap(pid: int) -> None:
    popen = _CHILDREN.get(pid)
    if popen is not None:
        popen.poll()
    else:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, proc_start: int = 0) -> bool:
    stat = _proc_stat(pid)
    if stat is None:
        return False
    if stat[0] in ("Z", "X"):
        _reap(pid)
        return False
    return not (proc_start and int(stat[19]) != proc_start)


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process below pid; PostgreSQL's children leave its process group."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat:
                children.setdefault(int(stat[1]), []).append(int(entry))
    found: list[tuple[int, int]] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append((child, _proc_start(child)))
        todo.extend(children.get(child, []))
    return found


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and stat[0] not in ("Z", "X") and int(stat[2]) == pgid:
                members.append(int(entry))
    return members


def read_record(name: str) -> ProcessRecord | None:
    """The record of a process we started, if it is still running; stale records are removed."""
    meta = PID_DIR / f"{name}.json"
    try:
        data = json.loads(meta.read_text())
        record = ProcessRecord(**data)
    except FileNotFoundError:
        pid_file = PID_DIR / f"{name}.pid"
        if pid_file.exists():  # a bare pid file (written by hand or an old launcher)
            with contextlib.suppress(ValueError):
                pid = int(pid_file.read_text().split()[0])
                if pid_alive(pid):
                    return ProcessRecord(name=name, pid=pid, kind="unknown", command=[])
            pid_file.unlink(missing_ok=True)
        return None
    except (ValueError, TypeError):
        meta.unlink(missing_ok=True)
        return None
    if pid_alive(record.pid, record.proc_start):
        return record
    # It died: leave no stray group members behind (e.g. postgres backends after a SIGKILL).
    _kill_group_leftovers(record.pid, record.proc_start)
    record.forget()
    return None


def recorded_names() -> list[str]:
    if not PID_DIR.exists():
        return []
    return sorted({p.stem for p in PID_DIR.glob("*.json")} | {p.stem for p in PID_DIR.glob("*.pid")})


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedProcess:
    """A handle on a process the launcher started (in this or an earlier run), Popen-like."""

    def __init__(self, record: ProcessRecord, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.record = record
        self.popen = popen or _CHILDREN.get(record.pid)
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.record.pid

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def port(self) -> int | None:
        return self.record.port

    @property
    def url(self) -> str | None:
        return f"http://{HOST}:{self.record.port}" if self.record.port else None

    def poll(self) -> int | None:
        if self.popen is not None:
            self.returncode = self.popen.poll()
            return self.returncode
        if pid_alive(self.record.pid, self.record.proc_start):
            return None
        self.returncode = self.returncode if self.returncode is not None else -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.record.command, timeout or 0)
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.record.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.record.pid, signal.SIGKILL)

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} port={self.port}>"


def _rotate_log(path: Path, limit: int = 50 * 1024 * 1024) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > limit:
            path.replace(path.with_suffix(path.suffix + ".1"))


def spawn(
    name: str,
    kind: str,
    command: list[str],
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    service: str = "",
    instance: str = "",
    as_user: str | None = None,
) -> ManagedProcess:
    """Start a process in its own session, output appended to .run/logs/<name>.log, and record it."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_file = log_path(name)
    _rotate_log(log_file)
    argv = list(command)
    if as_user:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--init-groups", "--", *argv]
    with log_file.open("ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} launcher starts: {' '.join(argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_set_pdeathsig if _tie_children_to_launcher else None,  # noqa: PLW1509
        )
    _CHILDREN[popen.pid] = popen
    # setpriv and the JVM exec in place, so the pid we got is the server's own pid.
    record = ProcessRecord(
        name=name,
        pid=popen.pid,
        kind=kind,
        command=argv,
        port=port,
        service=service,
        instance=instance,
        proc_start=_proc_start(popen.pid),
        log=str(log_file),
    )
    record.save()
    return ManagedProcess(record, popen)


def _kill_group_leftovers(pgid: int, proc_start: int = 0) -> None:
    """SIGKILL what is left of a dead leader's process group (e.g. PostgreSQL backends after a crash)."""
    stat = _proc_stat(pgid)
    if stat is not None and stat[0] not in ("Z", "X") and proc_start and int(stat[19]) != proc_start:
        return  # the pid now belongs to an unrelated process, so no group of ours can still use it
    for pid in _group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _stop_signal(kind: str) -> signal.Signals:
    # PostgreSQL: SIGTERM is "smart" shutdown (waits for every client to leave); SIGINT is "fast".
    return signal.SIGINT if kind == "postgres" else signal.SIGTERM


def _signal_record(record: ProcessRecord, sig: int) -> None:
    try:
        if record.kind == "postgres" and sig != signal.SIGKILL:
            os.kill(record.pid, sig)  # the postmaster tells its own children
        else:
            os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(record.pid, record.proc_start):
            return True
        time.sleep(0.05)
    return not pid_alive(record.pid, record.proc_start)


def stop_records(records: Iterable[ProcessRecord], sig: int | None = None, timeout: float | None = None) -> None:
    """Stop several processes at once: signal all, wait, SIGKILL the groups of any that stay."""
    records = list(records)
    family = {record.pid: _descendants(record.pid) for record in records}
    for record in records:
        _signal_record(record, sig if sig is not None else _stop_signal(record.kind))
    for record in records:
        wait = timeout if timeout is not None else STOP_TIMEOUTS.get(record.kind, 15.0)
        if not _wait_gone(record, wait):
            say(f"{record.name} (pid {record.pid}) did not stop within {wait:.0f}s; killing it")
            _signal_record(record, signal.SIGKILL)
            _wait_gone(record, 10.0)
        _kill_group_leftovers(record.pid, record.proc_start)
        _kill_orphans(family[record.pid])
        _reap(record.pid)
        record.forget()


def _kill_orphans(processes: list[tuple[int, int]], grace: float = 5.0) -> None:
    """Give a dead server's children a moment to exit by themselves, then SIGKILL the rest."""
    deadline = time.monotonic() + grace
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [(pid, start) for pid, start in alive if pid_alive(pid, start)]
        if alive:
            time.sleep(0.05)
    for pid, start in alive:
        if pid_alive(pid, start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def start_once(
    name: str,
    *,
    preflight: Callable[[], None],
    spawn: Callable[[], ManagedProcess],
    wait: Callable[[ManagedProcess], None],
    then: Callable[[], None] = lambda: None,
) -> ManagedProcess:
    """Wait for `name` if it runs; else preflight, spawn, wait and `then`, stopping it again if any of that fails."""
    with launcher_lock():
        record = read_record(name)
        if record is not None:
            process = ManagedProcess(record)
            wait(process)
            return process
        preflight()
        process = spawn()
        try:
            wait(process)
            then()
        except BaseException:
            stop_process(name)
            raise
        return process


def stop_process(name: str, sig: int | None = None, timeout: float | None = None) -> bool:
    """Stop one recorded process by name; False if it was not running."""
    record = read_record(name)
    if record is None:
        return False
    stop_records([record], sig, timeout)
    return True


# One-off commands (topics, migrations): run to completion, output in their own log.
Step = tuple[str, str, "subprocess.Popen[bytes]"]  # (log name, what it does, the process)


def start_step(name: str, command: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a one-off command (topics, migrations) with its output appended to .run/logs/<name>.log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with log_path(name).open("ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        out.flush()
        return subprocess.Popen(command, env=dict(env), cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def finish_steps(steps: list[Step], timeout: float = 300.0) -> None:
    """Wait for one-off commands [(log name, what, process)]; raise for the first that failed."""
    failures = []
    deadline = time.monotonic() + timeout
    try:
        for name, what, process in steps:
            try:
                code = process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
                what += f" (timed out after {timeout:.0f}s)"
            if code != 0:
                failures.append(f"{what} failed (exit {code}). Last lines of {rel(log_path(name))}:\n{log_tail(name)}")
    finally:
        kill_steps(steps)  # interrupted: leave nothing running
    if failures:
        raise LauncherError("\n".join(failures))


def kill_steps(steps: list[Step]) -> None:
    for _, _, process in steps:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
