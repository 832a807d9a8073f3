"""The restore drill (docs/operations.md, "Backups"): a separate stack builds a small network, is backed up, loses
every database and Kafka's data directory, and is restored from the backup; everything is back, the erased stay
erased (also one erased after the backup), the reporting read model rebuilt from the restored topics equals the
restored one, and a new join is welcomed exactly once while nobody is welcomed twice."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.local import launcher
from shared.auth import OrganiserScope, issue

REPO = Path(__file__).resolve().parents[2]
OFFSET = int(os.environ.get("GROUNDSWELL_DRILL_PORT_OFFSET") or 9500)
SERVICES = ("membership", "events", "notifications", "campaigns")

pytestmark = pytest.mark.timeout(900)


class DrillStack:
    """A second Groundswell on its own ports and state, driven through the launcher's and backup's commands."""

    def __init__(self, root: Path) -> None:
        self.state = root / "state"
        self.pg_dir = Path("/var/tmp") / f"groundswell-drill-{uuid.uuid4().hex[:8]}"
        self.backups = root / "backups"
        self.key = root / "backup.key"
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("GROUNDSWELL_", "SMTP_", "GATEWAY_", "BACKUP_"))
                and k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "PUBLIC_BASE_URL", "SECRET_KEY", "MAIL_FROM")}
        self.env = {**base, "GROUNDSWELL_STATE_DIR": str(self.state), "GROUNDSWELL_PORT_OFFSET": str(OFFSET),
                    "GROUNDSWELL_PG_DIR": str(self.pg_dir), "GROUNDSWELL_CACHE": str(launcher.STATE_DIR / "cache"),
                    "GROUNDSWELL_BACKUP_DIR": str(self.backups), "BACKUP_KEY_FILE": str(self.key)}  # fmt: skip
        self.gateway = f"http://127.0.0.1:{8000 + OFFSET}"
        self.catcher = f"http://127.0.0.1:{1080 + OFFSET}"
        self.pg = f"postgresql://groundswell:groundswell@127.0.0.1:{5433 + OFFSET}"

    def run(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run([sys.executable, *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
        assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    def launcher(self, *args: str) -> str:
        return self.run("-m", "deploy.local.launcher", *args)

    def service(self, name: str, *args: str) -> str:
        """`python -m services.<name> ...` with the environment the drill's launcher gives that service."""
        code = ("import subprocess, sys; from deploy.local.services import service_env; "
                f"sys.exit(subprocess.run([sys.executable, '-m', 'services.{name}', *sys.argv[1:]], "
                f"env=service_env('{name}')).returncode)")  # fmt: skip
        return self.run("-c", code, *args)

    def secret(self) -> str:
        return (self.state / "secret_key").read_text().strip()

    async def organiser(self) -> dict[str, str]:
        """A network organiser's session: an account made with membership's command (its enrolment, a password and
        a TOTP code, stood in for by marking it active), then its signed token."""
        made = self.service("membership", "create-organiser", "--email", f"drill-{uuid.uuid4().hex[:6]}@example.org",
                            "--name", "Drill Organiser", "--scope", "network")  # fmt: skip
        organiser_id = next(line.split()[-1] for line in made.splitlines() if line.startswith("organiser id:"))
        conn = await self.db("membership")
        await conn.execute("UPDATE organisers SET status = 'active' WHERE id = $1", organiser_id)
        await conn.close()
        token = issue(self.secret(), OrganiserScope(organiser_id, "network"))
        return {"Authorization": f"Bearer {token}", "Cookie": f"gs_organiser={token}", "Origin": self.gateway}

    async def db(self, service: str) -> asyncpg.Connection:
        return await asyncpg.connect(f"{self.pg}/groundswell_{service}")

    def destroy_data(self) -> None:
        """What a lost machine loses: every database (the whole cluster) and Kafka's log."""
        shutil.rmtree(self.pg_dir, ignore_errors=True)
        shutil.rmtree(self.state / "kafka" / "data", ignore_errors=True)


@pytest.fixture(scope="module")
def drill(tmp_path_factory) -> Iterator[DrillStack]:
    stack = DrillStack(tmp_path_factory.mktemp("restore-drill"))
    try:
        stack.launcher("up")
        yield stack
    finally:
        subprocess.run([sys.executable, "-m", "deploy.local.launcher", "stop"], env=stack.env, cwd=REPO,
                       capture_output=True, timeout=300)  # fmt: skip
        shutil.rmtree(stack.pg_dir, ignore_errors=True)


def messages_to(stack: DrillStack, address: str) -> list[dict]:
    answer = httpx.get(f"{stack.catcher}/api/messages", params={"to": address, "limit": 100}, timeout=10)
    return list(answer.json())


def wait_until(check, timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


async def test_a_lost_system_comes_back_from_its_backup(drill):
    tag = uuid.uuid4().hex[:6]
    people = {who: (f"{who.title()} Drill{tag}", f"{who}-{tag}@example.org")
              for who in ("alice", "bob", "carol", "frank")}  # fmt: skip
    client = httpx.AsyncClient(base_url=drill.gateway, timeout=30)
    organiser = await drill.organiser()

    # A small network: four joins, a meeting with an RSVP, a campaign with a signature, one erasure.
    for name, email in people.values():
        joined = await client.post("/join", data={"name": name, "email": email, "postcode": "B1 1AA",
                                                  "email_consent": "yes"})  # fmt: skip
        assert joined.status_code in (200, 303), joined.text
    wait_until(lambda: all(messages_to(drill, e) for _, e in people.values()), what="four welcomes")
    start = (datetime.now(UTC) + timedelta(days=9)).replace(microsecond=0)
    meeting = await client.post("/meetings", headers=organiser, json={
        "title": f"Drill meeting {tag}", "description": "Planning.", "kind": "in_person", "scope_type": "network",
        "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat(),
        "venue": "Community Hall", "capacity": 20})  # fmt: skip
    assert meeting.status_code == 201, meeting.text
    meeting_id = meeting.json()["id"]
    rsvp = await client.post(f"/events/{meeting_id}/rsvp", data={"name": people["alice"][0],
                                                                 "email": people["alice"][1]})  # fmt: skip
    assert rsvp.status_code in (200, 303), rsvp.text
    campaign = await client.post("/campaigns/api/campaigns", headers=organiser, json={
        "title": f"Drill campaign {tag}", "goal": "Equal care", "summary": "Act.", "issues": ["health"],
        "asks": [{"kind": "petition", "title": "Sign", "addressee": "The Minister", "body": "Act now.", "goal": 10}]})
    assert campaign.status_code == 201, campaign.text
    ask = campaign.json()["asks"][0]
    signed = await client.post(f"/campaigns/{campaign.json()['id']}/asks/{ask['id']}",
                               data={"name": people["bob"][0], "email": people["bob"][1]})  # fmt: skip
    assert signed.status_code in (200, 303), signed.text

    membership = await drill.db("membership")
    ids = {who: await membership.fetchval("SELECT id::text FROM members WHERE email_normalised = $1", email)
           for who, (_, email) in people.items()}  # fmt: skip
    erased = await client.post(f"/members/{ids['carol']}/erase", headers=organiser, data={"confirm": "erase"})
    assert erased.status_code in (200, 303), erased.text
    events_db, campaigns_db = await drill.db("events"), await drill.db("campaigns")

    async def settled() -> bool:
        pending = 0
        for conn in (membership, events_db, campaigns_db):
            pending += await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return pending == 0 and await campaigns_db.fetchval("SELECT count(*) FROM actions") >= 1

    deadline = time.monotonic() + 120
    while not await settled():
        assert time.monotonic() < deadline, "the drill network did not settle"
        await asyncio.sleep(1)
    await asyncio.sleep(3)  # the consumers handle what was just published
    drill.run("-m", "deploy.local.backup", "create")
    first = sorted(drill.backups.glob("*Z"))[-1]
    exported = json.loads((first / "manifest.json").read_text())["kafka"]["records"]
    assert sum(exported["membership.members"].values()) >= 4 and sum(exported["campaigns.actions"].values()) >= 1

    # Frank is erased after that backup (a second backup records it in the erasure ledger).
    erased = await client.post(f"/members/{ids['frank']}/erase", headers=organiser, data={"confirm": "erase"})
    assert erased.status_code in (200, 303), erased.text
    drill.run("-m", "deploy.local.backup", "create")
    assert ids["frank"] in json.loads((drill.backups / "erasures.json").read_text())
    for conn in (membership, events_db, campaigns_db):
        await conn.close()
    await client.aclose()
    mail_before = {who: len(messages_to(drill, email)) for who, (_, email) in people.items()}

    # The machine is lost: every database and Kafka's data; then the older backup is restored.
    drill.launcher("stop")
    drill.destroy_data()
    sealed = (first / "membership.dump.enc").read_bytes()
    assert people["alice"][1].encode() not in sealed and b"Drill" + tag.encode() not in sealed, "backups are sealed"
    drill.run("-m", "deploy.local.backup", "restore", str(first), timeout=900)
    drill.launcher("up")

    membership = await drill.db("membership")
    query = "SELECT id::text, status, name, email_normalised FROM members WHERE id::text = ANY($1::text[])"
    rows = {r["id"]: r for r in await membership.fetch(query, list(ids.values()))}
    assert rows[ids["alice"]]["email_normalised"] == people["alice"][1]
    assert rows[ids["bob"]]["name"] == people["bob"][0]
    assert rows[ids["carol"]]["status"] == "erased" and rows[ids["carol"]]["email_normalised"] is None
    assert rows[ids["frank"]]["status"] == "erased", "an erasure made after the backup is applied again"
    assert rows[ids["frank"]]["email_normalised"] is None and people["frank"][0] not in rows[ids["frank"]]["name"]
    events_db, campaigns_db = await drill.db("events"), await drill.db("campaigns")
    assert await events_db.fetchval("SELECT count(*) FROM meetings WHERE id = $1", meeting_id) == 1
    assert await events_db.fetchval("SELECT count(*) FROM rsvps WHERE meeting_id = $1", meeting_id) == 1
    assert await campaigns_db.fetchval("SELECT count(*) FROM actions WHERE ask_id = $1", ask["id"]) == 1

    # The reporting read model rebuilt from the restored topics equals the restored one.
    checked = drill.service("campaigns", "rebuild-reporting", "--check")
    assert "equal the live ones" in checked

    # Life goes on: a new join is welcomed once; nobody from before is welcomed again.
    newcomer = f"dave-{tag}@example.org"
    async with httpx.AsyncClient(base_url=drill.gateway, timeout=30) as again:
        joined = await again.post("/join", data={"name": f"Dave Drill{tag}", "email": newcomer, "postcode": "B1 1AA",
                                                 "email_consent": "yes"})  # fmt: skip
    assert joined.status_code in (200, 303)
    wait_until(lambda: messages_to(drill, newcomer), what="the newcomer's welcome")
    await asyncio.sleep(5)
    assert len(messages_to(drill, newcomer)) == 1
    for who, (_, email) in people.items():
        assert len(messages_to(drill, email)) == mail_before[who], f"{who} got an email again after the restore"

    # Frank's erasure reached the other services again: nothing of him is readable anywhere.
    for conn, service in ((membership, "membership"), (events_db, "events"), (campaigns_db, "campaigns")):
        for table in await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema='public'"):
            found = await conn.fetchval(
                f'SELECT count(*) FROM "{table["table_name"]}" t WHERE t::text ILIKE $1', f"%frank-{tag}%"
            )
            assert found == 0, f"{service}.{table['table_name']} still holds frank's address"
    for conn in (membership, events_db, campaigns_db):
        await conn.close()
