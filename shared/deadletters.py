"""Operate dead letters: list, show and replay what a consumer group could not handle.

    python -m shared.deadletters list   GROUP
    python -m shared.deadletters show   GROUP OFFSET
    python -m shared.deadletters replay GROUP (--offset N ... | --all) [--value-file FILE]

A replay publishes the original value (or a corrected one from --value-file) to the original topic
and key, marked for GROUP only: other groups skip it, and GROUP's inbox makes a repeated replay harmless.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.config import get_settings
from shared.consumer import H_ORIGINAL_KEY, H_ORIGINAL_TOPIC, H_REPLAY_FOR_GROUP
from shared.kafka_security import kafka_client_options
from shared.topics import CONSUMER_GROUPS, dead_letter_topic

H_REPLAYED_FROM = "x-replayed-from-offset"


@dataclass
class DeadLetter:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    timestamp_ms: int

    @property
    def original_topic(self) -> str:
        return self.headers[H_ORIGINAL_TOPIC]

    def summary(self) -> dict[str, object]:
        return {
            "offset": self.offset,
            "key": self.key.decode(errors="replace") if self.key else None,
            "original_topic": self.headers.get(H_ORIGINAL_TOPIC),
            "original_partition": self.headers.get("x-dlq-original-partition"),
            "original_offset": self.headers.get("x-dlq-original-offset"),
            "error_type": self.headers.get("x-dlq-error-type"),
            "error_message": self.headers.get("x-dlq-error-message"),
            "attempts": self.headers.get("x-dlq-attempts"),
            "failed_at": self.headers.get("x-dlq-failed-at"),
        }


async def dead_letter_counts(bootstrap: str | None = None) -> dict[str, int]:
    """How many dead letters each consumer group's topic keeps (30 days of them), without reading any: for the
    operators' part of the organisers' home."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap or get_settings().kafka_bootstrap_servers,
        enable_auto_commit=False,
        **kafka_client_options(),
    )
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [
            TopicPartition(dead_letter_topic(g), p)
            for g in CONSUMER_GROUPS
            for p in sorted(cluster.partitions_for_topic(dead_letter_topic(g)) or set())
        ]
        starts = await consumer.beginning_offsets(partitions) if partitions else {}
        ends = await consumer.end_offsets(partitions) if partitions else {}
        counts = dict.fromkeys(CONSUMER_GROUPS, 0)
        for tp in partitions:
            counts[tp.topic.removeprefix("dlq.")] += ends[tp] - starts[tp]
        return counts
    finally:
        await consumer.stop()


async def read_dead_letters(group: str, bootstrap: str | None = None) -> list[DeadLetter]:
    topic = dead_letter_topic(group)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap or get_settings().kafka_bootstrap_servers,
        enable_auto_commit=False,
        **kafka_client_options(),
    )
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # topics() does not keep what it learns
        partitions = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or set())]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        letters: list[DeadLetter] = []
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    letters.append(
                        DeadLetter(
                            offset=r.offset,
                            key=r.key,
                            value=r.value,
                            headers={k: v.decode(errors="replace") for k, v in r.headers},
                            timestamp_ms=r.timestamp,
                        )
                    )
        return letters
    finally:
        await consumer.stop()


async def replay(
    group: str,
    offsets: list[int] | None,
    *,
    value: bytes | None = None,
    bootstrap: str | None = None,
) -> list[int]:
    """Replay the dead letters at `offsets` (all when None) to their original topics; return what was replayed."""
    bootstrap = bootstrap or get_settings().kafka_bootstrap_servers
    letters = [d for d in await read_dead_letters(group, bootstrap) if offsets is None or d.offset in offsets]
    if value is not None and len(letters) != 1:
        raise ValueError("a corrected value can replace exactly one dead letter: give one --offset")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", **kafka_client_options()
    )
    await producer.start()
    try:
        for letter in letters:
            headers = [(k, v.encode()) for k, v in letter.headers.items() if not k.startswith("x-dlq-")]
            headers += [(H_REPLAY_FOR_GROUP, group.encode()), (H_REPLAYED_FROM, str(letter.offset).encode())]
            key = letter.key if letter.key is not None else letter.headers.get(H_ORIGINAL_KEY, "").encode() or None
            await producer.send_and_wait(
                letter.original_topic, value=value if value is not None else letter.value, key=key, headers=headers
            )
    finally:
        await producer.stop()
    return [d.offset for d in letters]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.deadletters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="one line per dead letter of GROUP")
    p_list.add_argument("group")
    p_show = sub.add_parser("show", help="headers and value of one dead letter")
    p_show.add_argument("group")
    p_show.add_argument("offset", type=int)
    p_replay = sub.add_parser("replay", help="publish dead letters again to their original topic, for GROUP only")
    p_replay.add_argument("group")
    which = p_replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--offset", type=int, action="append")
    which.add_argument("--all", action="store_true")
    p_replay.add_argument("--value-file", type=Path, help="a corrected value to publish instead (one offset only)")
    args = parser.parse_args(argv)

    if args.command == "list":
        letters = asyncio.run(read_dead_letters(args.group))
        for d in letters:
            print(json.dumps(d.summary()))
        print(f"{len(letters)} dead letter(s) in {dead_letter_topic(args.group)}", file=sys.stderr)
        return 0
    if args.command == "show":
        for d in asyncio.run(read_dead_letters(args.group)):
            if d.offset == args.offset:
                print(json.dumps({**d.summary(), "headers": d.headers}, indent=2))
                print((d.value or b"").decode(errors="replace"))
                return 0
        print(f"no dead letter at offset {args.offset}", file=sys.stderr)
        return 1
    value = args.value_file.read_bytes() if args.value_file else None
    try:
        done = asyncio.run(replay(args.group, None if args.all else args.offset, value=value))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"replayed {len(done)} dead letter(s): {done}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
