"""Backups and restore: every service's database and what Kafka holds, encrypted with a key the operator holds.

    python -m deploy.local.backup create              (make backup)
    python -m deploy.local.backup restore DIR         (make restore BACKUP=DIR)
    python -m deploy.local.backup list | new-key FILE

A backup is a directory `<GROUNDSWELL_BACKUP_DIR>/<UTC time>/` holding, each sealed with AES-256-GCM:
  * `<service>.dump.enc`: `pg_dump --format=custom` of the service's database (logical, consistent per database);
  * `kafka.jsonl.enc`: every record of every registered topic (domain topics, the subject-key topics, dead letters,
    deliveries, digests), in partition order, with keys, headers and timestamps;
and `manifest.json` (no personal data): sizes, digests, the consumer groups' committed offsets, the erasure ledger.
Order matters: the consumer groups' offsets are read first, then the databases, then the topics, so a restored
consumer never skips an event whose effects are missing from its database (the overlap is absorbed by the inboxes).

Erasure: a backup holds the keys of people erased after it was taken. `erasures.json` beside the backups is the
union of every member id erased at any backup (ids only); a restore re-applies every erasure in it that the restored
database does not have, so restoring an old backup never brings anyone back. docs/operations.md, "Backups".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from deploy.local.config import (
    KAFKA_BOOTSTRAP,
    KAFKA_EXTERNAL,
    POSTGRES_EXTERNAL,
    SERVICES,
    STATE_DIR,
    LauncherError,
    say,
)
from deploy.local.postgres import database_url, pg_bin_dir
from shared.database_url import database_name, libpq_url, with_database

BACKUP_DIR = Path(os.environ.get("GROUNDSWELL_BACKUP_DIR") or STATE_DIR / "backups").absolute()
BACKUP_KEY_FILE = Path(os.environ.get("BACKUP_KEY_FILE") or STATE_DIR / "backup.key").absolute()
BACKUP_KEEP = int(os.environ.get("BACKUP_KEEP") or 14)
ERASURE_LEDGER = "erasures.json"
MANIFEST = "manifest.json"
KAFKA_FILE = "kafka.jsonl.enc"

MAGIC = b"GSBACKUP1\n"
CHUNK = 1 << 20
_LAST = b"last"


# --- sealing ------------------------------------------------------------------------------------------------------
def load_key(path: Path = BACKUP_KEY_FILE, *, create: bool = False) -> bytes:
    """The 32-byte backup key (base64 in a file). Only the local default file is ever created, and with a warning:
    a key kept beside the backups protects nothing once both are copied off the machine."""
    if not path.exists():
        if not create:
            raise LauncherError(f"No backup key at {path}: set BACKUP_KEY_FILE to the key the backups were made with.")
        new_key_file(path)
        say(f"made a new backup key in {path}: keep a copy OFF this machine; without it no backup can be restored.")
    key = base64.b64decode(path.read_text().strip())
    if len(key) != 32:
        raise LauncherError(
            f"{path} does not hold a 32-byte base64 key (make one: python -m deploy.local.backup new-key FILE)"
        )
    return key


def new_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")


class SealedWriter:
    """Writes AES-256-GCM chunks: MAGIC, an 8-byte nonce prefix, then (length, ciphertext) per chunk, the last one
    authenticated as last (a truncated file does not decrypt). Also digests the sealed bytes for the manifest."""

    def __init__(self, out: IO[bytes], key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # the launcher imports without the venv

        self._aead = AESGCM(key)
        self._out = out
        self._prefix = secrets.token_bytes(8)
        self._counter = 0
        self._buffer = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0
        self._write(MAGIC + self._prefix)

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.digest.update(data)
        self.size += len(data)

    def _seal(self, chunk: bytes, last: bool) -> None:
        nonce = self._prefix + struct.pack(">I", self._counter)
        self._counter += 1
        sealed = self._aead.encrypt(nonce, chunk, _LAST if last else b"")
        self._write(struct.pack(">I", len(sealed)) + sealed)

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            self._seal(bytes(self._buffer[:CHUNK]), False)
            del self._buffer[:CHUNK]

    def close(self) -> None:
        self._seal(bytes(self._buffer), True)
        self._buffer.clear()


def unsealed_chunks(source: IO[bytes], key: bytes) -> Iterator[bytes]:
    """The plaintext of a sealed file, chunk by chunk; ValueError if it was altered, truncated or sealed with
    another key."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    head = source.read(len(MAGIC) + 8)
    if not head.startswith(MAGIC):
        raise ValueError("not a Groundswell backup file")
    prefix, counter, last = head[len(MAGIC) :], 0, False
    while not last:
        size = source.read(4)
        if len(size) < 4:
            raise ValueError("the backup file is truncated")
        sealed = source.read(struct.unpack(">I", size)[0])
        nonce = prefix + struct.pack(">I", counter)
        counter += 1
        try:
            yield aead.decrypt(nonce, sealed, b"")
        except InvalidTag:
            try:
                plain = aead.decrypt(nonce, sealed, _LAST)
            except InvalidTag:
                raise ValueError("the backup file was altered, or the key is not the one it was made with") from None
            last = True
            yield plain
    if source.read(1):
        raise ValueError("the backup file has bytes after its last chunk")


# --- databases ----------------------------------------------------------------------------------------------------
def _libpq_url(service: str) -> str:
    return libpq_url(database_url(service))  # TLS parameters kept: pg_dump reads sslmode, sslrootcert …


def _pg_tool(name: str) -> str:
    local = pg_bin_dir() / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def dump_database(service: str, target: Path, key: bytes) -> dict[str, Any]:
    """pg_dump (custom format) of the service's database, sealed into `target` as it streams."""
    command = [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
               f"--dbname={_libpq_url(service)}"]  # fmt: skip
    with target.open("wb") as out:
        writer = SealedWriter(out, key)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert process.stdout is not None
        for block in iter(lambda: process.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
            writer.write(block)
        writer.close()
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.wait() != 0:
            raise LauncherError(f"pg_dump of {service} failed: {stderr.strip()}")
    return {"file": target.name, "sha256": writer.digest.hexdigest(), "bytes": writer.size}


async def _recreate_database(service: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    url = _libpq_url(service)
    name = database_name(url)
    conn = await asyncpg.connect(with_database(url, "postgres"), timeout=10)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()


def restore_database(service: str, source: Path, key: bytes) -> None:
    """Drop and recreate the service's database, then pg_restore the sealed dump into it."""
    asyncio.run(_recreate_database(service))
    command = [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
               f"--dbname={_libpq_url(service)}"]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stdin is not None
    try:
        with source.open("rb") as sealed:
            for chunk in unsealed_chunks(sealed, key):
                process.stdin.write(chunk)
    finally:
        process.stdin.close()
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.wait() != 0:
        raise LauncherError(f"pg_restore of {service} failed: {stderr.strip()}")


async def _erased_member_ids() -> dict[str, str]:
    import asyncpg

    conn = await asyncpg.connect(_libpq_url("membership"), timeout=10)
    try:
        rows = await conn.fetch("SELECT id::text, erased_at FROM members WHERE status = 'erased'")
    finally:
        await conn.close()
    return {r["id"]: r["erased_at"].isoformat() if r["erased_at"] else "" for r in rows}


# --- Kafka --------------------------------------------------------------------------------------------------------
def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _kafka_options() -> dict[str, Any]:
    """TLS and SASL as the services connect (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*: shared/config.py).
    Only those are read: a backup needs no SECRET_KEY, so its check is not made here."""
    # Not at the top: `make stop`/`make status` import the launcher with the system Python, without the venv.
    from shared.config import Settings
    from shared.kafka_security import kafka_client_options

    return kafka_client_options(Settings(groundswell_dev=True))


async def committed_offsets(bootstrap: str) -> dict[str, dict[str, dict[str, int]]]:
    """Every consumer group's committed offsets: {group: {topic: {partition: offset}}}."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **_kafka_options())
    await admin.start()
    try:
        groups: dict[str, dict[str, dict[str, int]]] = {}
        for group_id, _protocol in await admin.list_consumer_groups():
            offsets = await admin.list_consumer_group_offsets(group_id)
            for tp, meta in offsets.items():
                if meta.offset >= 0:
                    groups.setdefault(group_id, {}).setdefault(tp.topic, {})[str(tp.partition)] = meta.offset
        return groups
    finally:
        await admin.close()


async def export_topics(bootstrap: str, target: Path, key: bytes, topics: list[str]) -> dict[str, Any]:
    """Every record of `topics` up to their end offsets now, sealed, one JSON line a record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **_kafka_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([t for t in topics if t in existing]) if existing else []
    finally:
        await admin.close()
    partitions = [TopicPartition(d["topic"], p["partition"]) for d in sorted(described, key=lambda d: d["topic"])
                  for p in sorted(d["partitions"], key=lambda p: p["partition"])]  # fmt: skip
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **_kafka_options()
    )
    await consumer.start()
    counts: dict[str, dict[str, int]] = {}
    for tp in partitions:
        counts.setdefault(tp.topic, {})[str(tp.partition)] = 0
    try:
        ends = await consumer.end_offsets(partitions) if partitions else {}
        starts = await consumer.beginning_offsets(partitions) if partitions else {}
        # Every partition with records at once (one fetch serves many): per partition, one at a time, costs a
        # round of fetches each, and most of the registered partitions are empty.
        pending = {tp for tp in partitions if starts[tp] < ends[tp]}
        with target.open("wb") as out:
            writer = SealedWriter(out, key)
            if pending:
                consumer.assign(sorted(pending))
                await consumer.seek_to_beginning(*pending)
            idle = 0  # a compacted partition's last offsets may hold no record: stop when fetches stay empty
            while pending and idle < 3:
                batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=5000)
                idle = 0 if any(batch.values()) else idle + 1
                for tp, records in batch.items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            break
                        line = {"t": tp.topic, "p": tp.partition, "o": record.offset, "ts": record.timestamp,
                                "k": _b64(record.key), "v": _b64(record.value),
                                "h": [[k, _b64(v)] for k, v in (record.headers or ())]}  # fmt: skip
                        writer.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
                        counts[tp.topic][str(tp.partition)] += 1
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
            writer.close()
    finally:
        await consumer.stop()
    return {"file": target.name, "sha256": writer.digest.hexdigest(), "bytes": writer.size, "records": counts}


def _records(source: Path, key: bytes) -> Iterator[dict[str, Any]]:
    pending = b""
    with source.open("rb") as sealed:
        for chunk in unsealed_chunks(sealed, key):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)


async def import_topics(
    bootstrap: str, source: Path, key: bytes, groups: dict[str, Any], create_topics: Callable[[], None]
) -> int:
    """Recreate the registered topics empty, write the records back to their partitions in order, and commit each
    consumer group at the position of its first record not yet handled (offsets are renumbered from 0)."""
    from aiokafka import AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import OffsetAndMetadata

    from shared.topics import all_topics

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **_kafka_options())
    await admin.start()
    try:
        registered = {t.name for t in all_topics()}
        doomed = [t for t in await admin.list_topics() if t in registered]
        if doomed:
            await admin.delete_topics(doomed)
            for _ in range(60):
                if not registered & set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    await asyncio.to_thread(create_topics)  # as the launcher does: `python -m shared.topics create`
    # How many records of each partition came before each old offset: the new offset of a committed position.
    before: dict[tuple[str, int], list[int]] = {}
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5, **_kafka_options()
    )
    await producer.start()
    written = 0
    try:
        pending = []
        for record in _records(source, key):
            before.setdefault((record["t"], record["p"]), []).append(record["o"])
            headers = [(k, _unb64(v) or b"") for k, v in record["h"]]
            pending.append(
                await producer.send(
                    record["t"],
                    value=_unb64(record["v"]),
                    key=_unb64(record["k"]),
                    partition=record["p"],
                    timestamp_ms=record["ts"],
                    headers=headers,
                )
            )
            written += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    commits = []
    for group_id, topics in groups.items():
        positions = {}
        for topic, partitions in topics.items():
            for partition, offset in partitions.items():
                old = before.get((topic, int(partition)), [])
                renumbered = sum(1 for o in old if o < offset)
                positions[TopicPartition(topic, int(partition))] = OffsetAndMetadata(renumbered, "")
        live = {tp: meta for tp, meta in positions.items() if tp.topic in registered}
        if live:
            commits.append(_commit_positions(bootstrap, group_id, live))
    await asyncio.gather(*commits)  # a consumer per group; together, not one after another
    return written


async def _commit_positions(bootstrap: str, group_id: str, positions: dict[Any, Any]) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False, **_kafka_options()
    )
    await consumer.start()
    try:
        consumer.assign(list(positions))
        await consumer.commit(positions)
    finally:
        await consumer.stop()


# --- the two commands ---------------------------------------------------------------------------------------------
def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def create_backup(root: Path = BACKUP_DIR, key_file: Path = BACKUP_KEY_FILE, keep: int = BACKUP_KEEP,
                  bootstrap: str = KAFKA_BOOTSTRAP) -> Path:  # fmt: skip
    """A new backup of the running system; older ones beyond `keep` are removed. Its directory."""
    from shared.topics import all_topics

    key = load_key(key_file, create=key_file == BACKUP_KEY_FILE)
    root.mkdir(parents=True, exist_ok=True)
    target = root / _stamp()
    while target.exists():  # backups are named by the second
        time.sleep(0.2)
        target = root / _stamp()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    groups = asyncio.run(committed_offsets(bootstrap))  # first: a restored consumer may re-handle, never skip
    with ThreadPoolExecutor(len(SERVICES)) as pool:  # the databases are separate: dump them side by side
        dumps = {s: pool.submit(dump_database, s, staging / f"{s}.dump.enc", key) for s in SERVICES}
        databases = {service: dump.result() for service, dump in dumps.items()}
    erased = asyncio.run(_erased_member_ids())
    kafka = asyncio.run(export_topics(bootstrap, staging / KAFKA_FILE, key, [t.name for t in all_topics()]))
    ledger = _merge_ledger(root, erased)
    manifest = {"format": 1, "created_at": datetime.now(UTC).isoformat(), "databases": databases, "kafka": kafka,
                "consumer_groups": groups, "erased_member_ids": sorted(erased)}  # fmt: skip
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    staging.replace(target)
    say(f"backup written to {target} ({sum(d['bytes'] for d in databases.values()) + kafka['bytes']} bytes sealed; "
        f"{len(ledger)} erasure(s) in {root / ERASURE_LEDGER})")  # fmt: skip
    prune(root, keep)
    return target


def _merge_ledger(root: Path, erased: dict[str, str]) -> dict[str, str]:
    path = root / ERASURE_LEDGER
    ledger = json.loads(path.read_text()) if path.exists() else {}
    ledger.update(erased)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")
    temporary.replace(path)
    return ledger


def backups(root: Path = BACKUP_DIR) -> list[Path]:
    return sorted(p for p in root.glob("*Z") if (p / MANIFEST).exists())


def prune(root: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` backups (an erased person's data lives on in a backup until it goes)."""
    doomed = backups(root)[:-keep] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def verify_backup(backup: Path, key: bytes) -> dict[str, Any]:
    """The manifest, after checking every file's digest and that it decrypts with `key`."""
    manifest = json.loads((backup / MANIFEST).read_text())
    for entry in [*manifest["databases"].values(), manifest["kafka"]]:
        path = backup / entry["file"]
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            raise LauncherError(f"{path} does not match its digest in the manifest: the backup is damaged.")
    with (backup / KAFKA_FILE).open("rb") as sealed:
        try:
            next(unsealed_chunks(sealed, key))
        except ValueError as exc:
            raise LauncherError(f"{backup}: {exc}") from None
    return manifest


def restore_backup(backup: Path, create_topics: Callable[[], None], reapply: Callable[[Path], int],
                   key_file: Path = BACKUP_KEY_FILE, bootstrap: str = KAFKA_BOOTSTRAP) -> dict[str, Any]:  # fmt: skip
    """Bring the stopped system back from `backup`: databases, topics, consumer positions, then every later
    erasure from the ledger beside it. PostgreSQL and Kafka must run; the services must not."""
    key = load_key(key_file)
    manifest = verify_backup(backup, key)
    say(f"restoring the databases of {', '.join(manifest['databases'])} ...")
    with ThreadPoolExecutor(len(manifest["databases"])) as pool:
        restores = [pool.submit(restore_database, s, backup / e["file"], key) for s, e in manifest["databases"].items()]
        for restored in restores:
            restored.result()
    say("restoring Kafka's topics ...")
    groups = manifest["consumer_groups"]
    written = asyncio.run(import_topics(bootstrap, backup / KAFKA_FILE, key, groups, create_topics))
    ledger_path = backup.parent / ERASURE_LEDGER
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    later = sorted(set(ledger) - set(manifest["erased_member_ids"]))
    if later:
        listing = backup / "reapply-erasures.json"
        listing.write_text(json.dumps(later) + "\n")
        say(f"re-applying {len(later)} erasure(s) made after this backup ...")
        if reapply(listing) != 0:
            raise LauncherError("re-applying later erasures failed: do not start the services; see the output above.")
    say(f"restored {backup.name}: {len(manifest['databases'])} databases, {written} Kafka records.")
    return {"records": written, "reapplied_erasures": later}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.backup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create", help="back up the running system")
    restore = sub.add_parser("restore", help="restore a backup into the stopped system")
    restore.add_argument("backup", type=Path)
    sub.add_parser("list", help="the backups kept")
    key = sub.add_parser("new-key", help="write a new backup key to FILE (keep it off the machine)")
    key.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            create_backup()
        elif args.command == "list":
            for path in backups():
                manifest = json.loads((path / MANIFEST).read_text())
                size = sum(d["bytes"] for d in manifest["databases"].values()) + manifest["kafka"]["bytes"]
                print(f"{path}  {size:>12} bytes")
        elif args.command == "new-key":
            new_key_file(args.file)
            print(f"wrote {args.file}; keep a copy off this machine")
        else:
            from deploy.local import stack

            _restore_stopped(args.backup.absolute(), stack)
        return 0
    except LauncherError as exc:
        print(f"[backup] {exc}", file=sys.stderr)
        return 1


def _restore_stopped(backup: Path, stack: Any) -> None:
    """`make restore`: refuses while services run, starts PostgreSQL and Kafka if needed, restores."""
    from deploy.local.kafka import create_topics, start_kafka
    from deploy.local.postgres import start_postgres
    from deploy.local.services import run_service_command

    running = [p["name"] for p in stack.status() if p["name"] in SERVICES and p["state"] != "stopped"]
    if running:
        raise LauncherError(f"Stop the services first (make stop): {', '.join(running)} still run.")
    # A server of its own (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS: a managed one, or a restore Job on Kubernetes) must
    # already run; the launcher's own are started.
    if not POSTGRES_EXTERNAL:
        start_postgres()
    if not KAFKA_EXTERNAL:
        start_kafka()
    restore_backup(
        backup, create_topics, lambda listing: run_service_command("membership", "reapply-erasures", str(listing))
    )
    say("start the system with `make up` (or `make run`).")


if __name__ == "__main__":
    raise SystemExit(main())
