"""Run Groundswell's benchmarks against the real system on this machine, each beside a baseline measured in the
same run, and optionally record them in docs/benchmarks.md.

    .venv/bin/python bench/run.py                       # all of them, full sizes
    .venv/bin/python bench/run.py --quick join latency   # some of them, small sizes
    .venv/bin/python bench/run.py --quick --out docs/benchmarks.md

`make bench BENCH_ARGS="--quick"` does the same. Unless GROUNDSWELL_STATE_DIR is set, the benchmarks start (or
reuse) a stack of their own on ports shifted by 5000 with its state in .run/bench/, and leave it running
(`--stop` stops it afterwards). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, BenchOutcome, fmt, launcher, say  # noqa: E402

BENCHMARKS = ("join", "latency", "catchup", "fanout", "digest", "memory", "pages", "audience", "mailing", "ladder")
# `pages`, `audience`, `mailing` and `ladder` generate a large network first: asked for by name only
DEFAULT = BENCHMARKS[:6]
DESCRIPTIONS = {
    "join": "1. join ingest through the gateway",
    "latency": "2. join to welcome email latency at 200 joins/s",
    "catchup": "3. catch-up: rebuilding the reporting read model",
    "fanout": "4. fan-out of a meeting announcement",
    "digest": "5. organisers' weekly digests",
    "memory": "6. memory of each service, idle and under load 1",
    "pages": "7. organiser pages on a national network (bench/pages.py)",
    "audience": "8. audience count: a mailing's live count at 1,000,000 members",
    "mailing": "9. mailing: a mailing to 100,000 members, and its scheduled start",
    "ladder": "10. ladder: an organiser saves a new engagement ladder for 100,000 members",
}


async def run_selected(names: list[str], quick: bool, workdir: Path, profile: bool = False) -> list[BenchOutcome]:
    outcomes: list[BenchOutcome] = []
    memory = BenchOutcome("Memory (RSS)") if "memory" in names else None

    async def timed(coro) -> BenchOutcome:  # type: ignore[no-untyped-def]
        """Run one benchmark; one that fails is recorded as failed and the others still run."""
        started = time.monotonic()
        try:
            outcome = await coro
        except Exception as exc:
            say(f"FAILED: {exc!r}")
            outcome = BenchOutcome(DESCRIPTIONS[name].split(". ", 1)[1], notes=[f"FAILED: {exc}"])
        outcome.seconds = time.monotonic() - started
        outcomes.append(outcome)
        return outcome

    for name in names:
        say(DESCRIPTIONS[name])
        if name == "join" or (name == "memory" and "join" not in names):
            from bench import join_ingest

            await timed(join_ingest.run(quick or name == "memory", workdir, memory, profile=profile))
        elif name == "latency":
            from bench import latency

            await timed(latency.run(quick, workdir))
        elif name == "catchup":
            from bench import catchup

            await timed(catchup.run(quick, workdir, profile=profile))
        elif name == "fanout":
            from bench import fanout

            await timed(fanout.run(quick, workdir, profile=profile))
        elif name == "digest":
            from bench import digest

            await timed(digest.run(quick, workdir, profile=profile))
        elif name == "pages":
            from bench import pages

            await timed(pages.run(quick))
        elif name == "audience":
            from bench import audience

            await timed(audience.run(quick, workdir))
        elif name == "mailing":
            from bench import mailing

            await timed(mailing.run(quick, workdir))
        elif name == "ladder":
            from bench import ladder

            await timed(ladder.run(quick, workdir))
    if memory is not None:
        outcomes.append(memory)
    return outcomes


def markdown_section(outcomes: list[BenchOutcome], command: str, quick: bool, started: datetime,
                     names: list[str]) -> str:
    which = "" if names == list(DEFAULT) else ": " + ", ".join(names)
    lines = [
        f"## Run of {started:%Y-%m-%d %H:%M} UTC, {'quick' if quick else 'full'} sizes{which}",
        "",
        f"Command: `{command}`. Machine: {os.cpu_count()} cores, shared with other work while it ran "
        "(so compare the ratios, not the absolute figures).",
        "",
        "| benchmark | figure | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        for r in outcome.results:
            base = "-"
            if r.baseline is not None:
                base = f"{r.baseline_name}: {fmt(r.baseline)} {r.baseline_unit or r.unit}"
            ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
            target = r.target + ("" if r.met is None else (" (met)" if r.met else " (**not met**)"))
            figure = f"{r.name}: {fmt(r.value)} {r.unit}"
            lines.append(f"| {outcome.title} | {figure} | {base} | {ratio} | {target or '-'} |")
    lines.append("")
    for outcome in outcomes:
        detail = [f"{k}: {v}" for k, v in outcome.sizes.items()] + outcome.notes
        if detail or outcome.seconds:
            lines.append(f"- **{outcome.title}** ({outcome.seconds:.0f} s): " + "; ".join(detail))
    lines.append("")
    return "\n".join(lines)


RESULTS_MARKER = "<!-- bench/run.py appends runs below this line -->"


def record(path: Path, section: str) -> None:
    """Put the run under the results marker of `path`, newest first; an earlier run of the same day, sizes and
    benchmarks is replaced."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{RESULTS_MARKER}\n"
    if RESULTS_MARKER not in text:
        text = text.rstrip("\n") + f"\n\n{RESULTS_MARKER}\n"
    head, tail = text.split(RESULTS_MARKER, 1)
    runs = [r for r in re.split(r"(?m)^(?=## Run of )", tail) if r.startswith("## Run of ")]

    def kind(run: str) -> tuple[str, str]:  # (day, what follows the time: sizes and benchmarks)
        heading = run.splitlines()[0][len("## Run of "):]
        return heading[:10], heading.split(" UTC", 1)[-1]

    runs = [r for r in runs if kind(r) != kind(section)]
    body = "\n".join(r.rstrip("\n") + "\n" for r in [section, *runs])
    path.write_text(head + RESULTS_MARKER + "\n\n" + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", nargs="*", metavar="NAME",
                        help=f"which to run ({', '.join(BENCHMARKS)}); default all but pages")
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes in all)")
    parser.add_argument("--out", type=Path, help="record the run in this markdown file (e.g. docs/benchmarks.md)")
    parser.add_argument("--profile", action="store_true",
                        help="profile what is measured: py-spy on the service (join, fan-out), pyinstrument around "
                             "the command (catch-up, digest); the output goes to <state dir>/bench/")
    parser.add_argument("--stop", action="store_true", help="stop the benchmark stack afterwards")
    args = parser.parse_args(argv)
    unknown = [n for n in args.benchmarks if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    names = [n for n in BENCHMARKS if n in (args.benchmarks or DEFAULT)]
    started = datetime.now(UTC)
    workdir = launcher.STATE_DIR / "bench"
    say(f"stack: state {launcher.STATE_DIR}, gateway {launcher.GATEWAY_URL}; starting what is not running")
    launcher.ensure_up(services=True)
    try:
        outcomes = asyncio.run(run_selected(names, args.quick, workdir, args.profile))
    finally:
        if args.stop:
            launcher.stop_all()
    print("\nResults:")
    for outcome in outcomes:
        print(f"  {outcome.title} ({outcome.seconds:.0f} s)")
        for r in outcome.results:
            print("    " + r.line())
    if args.out:
        command = "bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
        record(args.out if args.out.is_absolute() else REPO_ROOT / args.out,
               markdown_section(outcomes, command.strip(), args.quick, started, names))
        print(f"\nrecorded in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
