"""A second Groundswell beside the one the suite runs, on its own ports (an offset) and state, driven through the
launcher's own commands in subprocesses: the restore drill (tests/infra) and the fault drill (tests/scale)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from deploy.local import launcher
from shared.auth import OrganiserScope, issue

REPO = Path(__file__).resolve().parents[2]


class SecondStack:
    """A second Groundswell on its own ports and state, driven through the launcher's and backup's commands.

    `env` adds to (or overrides) the environment every command of this stack runs with, e.g. a Kafka cluster's
    KAFKA_BOOTSTRAP_SERVERS or GROUNDSWELL_INSTANCES; nothing of the suite's own stack leaks in."""

    def __init__(self, root: Path, offset: int, env: dict[str, str] | None = None) -> None:
        self.state = root / "state"
        self.offset = offset
        self.pg_dir = Path("/var/tmp") / f"groundswell-drill-{uuid.uuid4().hex[:8]}"
        self.backups = root / "backups"
        self.key = root / "backup.key"
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("GROUNDSWELL_", "SMTP_", "GATEWAY_", "BACKUP_", "KAFKA_"))
                and k not in ("DATABASE_URL", "PUBLIC_BASE_URL", "SECRET_KEY", "MAIL_FROM")}
        self.env = {**base, "GROUNDSWELL_STATE_DIR": str(self.state), "GROUNDSWELL_PORT_OFFSET": str(offset),
                    "GROUNDSWELL_PG_DIR": str(self.pg_dir), "GROUNDSWELL_CACHE": str(launcher.STATE_DIR / "cache"),
                    "GROUNDSWELL_BACKUP_DIR": str(self.backups), "BACKUP_KEY_FILE": str(self.key),
                    **(env or {})}  # fmt: skip
        self.gateway = f"http://127.0.0.1:{8000 + offset}"
        self.catcher = f"http://127.0.0.1:{1080 + offset}"
        self.pg = f"postgresql://groundswell:groundswell@127.0.0.1:{5433 + offset}"

    def run(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run([sys.executable, *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
        assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    def launcher(self, *args: str) -> str:
        return self.run("-m", "deploy.local.launcher", *args)

    def stop(self) -> None:
        """Stop everything this stack's launcher recorded (services, gateway, PostgreSQL, Kafka nodes) and remove
        its PostgreSQL cluster; never raises, so a fixture's `finally` always gets this far."""
        subprocess.run([sys.executable, "-m", "deploy.local.launcher", "stop"], env=self.env, cwd=REPO,
                       capture_output=True, timeout=300)  # fmt: skip
        shutil.rmtree(self.pg_dir, ignore_errors=True)

    def kill(self, name: str) -> None:
        """SIGKILL one of this stack's recorded processes by its launcher name (`membership-b`, `kafka-2`)."""
        self.run("-c", "import signal, sys; from deploy.local.processes import stop_process; "
                       "sys.exit(0 if stop_process(sys.argv[1], signal.SIGKILL, 10.0) else 1)", name)  # fmt: skip

    def log(self, name: str) -> str:
        path = self.state / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else f"(no {path})"

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
