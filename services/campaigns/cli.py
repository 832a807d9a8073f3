"""Operator commands of the campaigns service, beside `serve` and `migrate`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from shared.cli import ExtraCommand
from shared.config import get_settings
from shared.errors import InvalidInput

SAMPLE_MPS = Path(__file__).parent / "data" / "mps_sample.csv"


def _database():  # type: ignore[no-untyped-def]
    from shared.db import Database

    settings = get_settings()
    return Database(settings.database_url, 4)


def _units_of_work(db):  # type: ignore[no-untyped-def]
    from services.campaigns import db as tables
    from shared.outbox import Outbox
    from shared.uow import UnitsOfWork

    return UnitsOfWork(db, Outbox(tables.delivery.outbox))


def _load_mps(args: argparse.Namespace) -> int:
    from services.campaigns.letters import MpLetters

    path = Path(args.file) if args.file else SAMPLE_MPS
    csv_text = path.read_text(encoding="utf-8")

    async def run() -> int:
        db = _database()
        try:
            letters = MpLetters(_units_of_work(db))
            try:
                n, k = await letters.load_mp_dataset(csv_text, replace=not args.add)
            except InvalidInput as exc:
                print(f"{path}: {exc.errors['file']}", file=sys.stderr)
                return 1
            print(f"loaded {n} constituencies and {k} postcode keys from {path}")
            return 0
        finally:
            await db.dispose()

    return asyncio.run(run())


def _rebuild(args: argparse.Namespace) -> int:
    from services.campaigns.engagement import EngagementService
    from services.campaigns.rebuild import rebuild
    from services.campaigns.reports import Reports
    from shared.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.service_instance, settings.log_level, settings.log_json)

    async def run() -> int:
        db = _database()
        try:
            ladder = await EngagementService(_units_of_work(db)).ladder()
            result = await rebuild(db, settings.kafka_bootstrap_servers, Reports(ladder), group=args.group,
                                   check=args.check)
        finally:
            await db.dispose()
        print(f"read {result.records} records, projected {result.applied} events, skipped {result.skipped}")
        if args.check:
            if result.differences:
                print("the rebuilt figures differ from the live ones for: " + ", ".join(result.differences))
                return 1
            print("the rebuilt figures equal the live ones (nothing was changed)")
            return 0
        print("the reporting read model was replaced by the rebuilt one")
        return 0

    return asyncio.run(run())


def _ladder(args: argparse.Namespace) -> int:
    from services.campaigns.domain import validate_ladder
    from services.campaigns.engagement import EngagementService

    raw = Path(args.file).read_text(encoding="utf-8") if args.file else None

    async def run() -> int:
        db = _database()
        try:
            svc = EngagementService(_units_of_work(db))
            if raw is not None:
                try:
                    ladder = validate_ladder(json.loads(raw))
                except (InvalidInput, ValueError) as exc:
                    print(f"{args.file}: {exc}", file=sys.stderr)
                    return 1
                change = await svc.set_ladder(ladder)
                # The running service's background loop would move the rest; this command waits and helps.
                change = await svc.moves.finish(change.id) or await svc.moves.get(change.id)
                print(f"ladder saved; {change.moved} member(s) changed level ({change.status})")
            print(json.dumps([r.as_dict() for r in await svc.ladder()], indent=2))
            return 0
        finally:
            await db.dispose()

    return asyncio.run(run())


def extra_commands(sub: argparse._SubParsersAction) -> dict[str, ExtraCommand]:
    p = sub.add_parser("load-mps", help="load the constituency and MP dataset from a CSV (docs/campaigns.md)")
    p.add_argument("file", nargs="?", help=f"the CSV (default: the sample, {SAMPLE_MPS.name})")
    p.add_argument("--add", action="store_true", help="add to the dataset instead of replacing it")
    p = sub.add_parser("rebuild-reporting", help="rebuild the reporting read model from the beginning of the topics")
    p.add_argument("--check", action="store_true", help="rebuild aside, compare with the live figures, change nothing")
    p.add_argument("--group", default="campaigns.reporting", help="the reporting consumer group (its inbox rows)")
    p = sub.add_parser("engagement-ladder", help="show the engagement ladder, or replace it from a JSON file")
    p.add_argument("file", nargs="?", help='[{"level": "supporter", "label": "Supporter"}, {"level": …, '
                                          '"min_actions": 1, "min_attended": 0, "min_total": 0, "roles": []}, …]')
    return {
        "load-mps": _load_mps,
        "rebuild-reporting": _rebuild,
        "engagement-ladder": _ladder,
    }
