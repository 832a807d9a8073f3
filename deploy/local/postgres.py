"""PostgreSQL for the local stack: a private cluster (run as the `postgres` user when the launcher is root),
one database per service owned by the `groundswell` role, or the server DATABASE_URL names instead.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from deploy.local.config import (
    HOST,
    IS_ROOT,
    PG_PORT,
    POSTGRES_EXTERNAL,
    SERVICES,
    STATE_DIR,
    LauncherError,
    required_ports,
    say,
    start_timeout,
)
from deploy.local.packages import apt_install
from deploy.local.probes import check_ports, not_ready, run_in_thread, wait_until
from deploy.local.processes import ManagedProcess, spawn, start_once, stop_process
from shared.database_url import database_name, libpq_url, with_database

PG_USER = "groundswell"
PG_PASSWORD = "groundswell"
PG_SUPERUSER = "postgres"  # bootstrap superuser of the private cluster, reachable only over its socket


def _others_can_traverse(path: Path) -> bool:
    """Can an unprivileged user (the `postgres` account) reach `path`? Checks the parts that exist."""
    for part in path.parents:
        if part.exists() and not part.stat().st_mode & 0o001:
            return False
    return True


def _pg_dir() -> Path:
    """Where the private cluster lives: in the state dir, unless the server's unprivileged user could not
    reach it there (a checkout inside a private directory, as `mktemp -d` makes), then in /var/tmp."""
    if os.environ.get("GROUNDSWELL_PG_DIR"):
        return Path(os.environ["GROUNDSWELL_PG_DIR"])
    inside = STATE_DIR / "pg"
    if os.geteuid() != 0 or _others_can_traverse(inside):
        return inside
    digest = hashlib.sha1(str(STATE_DIR.resolve()).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"groundswell-pg-{digest}"


PG_DIR = _pg_dir()


def database_url(service: str) -> str:
    """The service's own database: on the private cluster, or on the DATABASE_URL server if set (its TLS
    parameters kept)."""
    name = f"groundswell_{service}"
    external = os.environ.get("DATABASE_URL")
    if external:
        return with_database(external, name)
    return f"postgresql+asyncpg://{PG_USER}:{PG_PASSWORD}@{HOST}:{PG_PORT}/{name}"


def pg_bin_dir() -> Path:
    """The PostgreSQL server binaries: $PG_BIN, else the newest /usr/lib/postgresql/<v>/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres") or shutil.which("initdb")
    return Path(on_path).parent if on_path else Path("/usr/lib/postgresql/15/bin")


def check_tools() -> None:
    """The server binaries (installed with apt-get as root) and, as root, a `postgres` user to run them as."""
    if not (pg_bin_dir() / "postgres").exists() and not os.environ.get("PG_BIN"):
        apt_install("postgresql", "PostgreSQL (server binaries in /usr/lib/postgresql/<version>/bin)")
    if not (pg_bin_dir() / "postgres").exists():
        raise LauncherError(f"PostgreSQL binaries not found in {pg_bin_dir()}; set PG_BIN to their directory.")
    if IS_ROOT:
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise LauncherError(
                "PostgreSQL refuses to run as root and there is no `postgres` user to run it as. "
                "Create one (sudo adduser --system --group postgres) or run the launcher as a normal user."
            ) from exc


def _preflight() -> None:
    check_tools()
    check_ports(required_ports(["postgres"]))


def _pg_user() -> str | None:
    return "postgres" if IS_ROOT else None


def pg_data_dir() -> Path:
    return PG_DIR / "data"


def pg_socket_dir() -> Path:
    sock = PG_DIR / "sock"
    if len(str(sock / f".s.PGSQL.{PG_PORT}")) > 100:  # unix socket paths are limited to 107 bytes
        digest = hashlib.sha1(str(PG_DIR).encode()).hexdigest()[:10]
        sock = Path(f"/tmp/groundswell-pg-{digest}")
    return sock


def _as_pg_user(command: list[str]) -> list[str]:
    user = _pg_user()
    if user:
        return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *command]
    return command


def postgres_conf() -> str:
    return f"""# Written by deploy/local/postgres.py on every start (included from postgresql.conf).
listen_addresses = '{HOST}'
port = {PG_PORT}
unix_socket_directories = '{pg_socket_dir()}'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 128MB
effective_cache_size = 512MB
work_mem = 4MB
maintenance_work_mem = 64MB
wal_buffers = 4MB
min_wal_size = 80MB
max_wal_size = 1GB
checkpoint_completion_target = 0.9
random_page_cost = 1.1
# Durability stays on: fault-injection tests restart PostgreSQL and expect committed rows back.
fsync = on
synchronous_commit = on
password_encryption = scram-sha-256
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1000
log_timezone = 'UTC'
timezone = 'UTC'
"""


PG_HBA = """# Written by deploy/local/postgres.py. The unix socket lives in a private directory (0700).
local   all   all                   trust
host    all   all   127.0.0.1/32    scram-sha-256
host    all   all   ::1/128         scram-sha-256
"""


def _chown_pg(path: Path) -> None:
    user = _pg_user()
    if user:
        entry = pwd.getpwnam(user)
        shutil.chown(path, entry.pw_uid, entry.pw_gid)


def _prepare_postgres() -> None:
    bins = pg_bin_dir()
    PG_DIR.mkdir(parents=True, exist_ok=True)
    PG_DIR.chmod(0o700)
    _chown_pg(PG_DIR)
    sock = pg_socket_dir()
    sock.mkdir(parents=True, exist_ok=True)
    sock.chmod(0o700)
    _chown_pg(sock)
    if _pg_user():
        probe = subprocess.run(_as_pg_user(["test", "-w", str(PG_DIR)]), capture_output=True)
        if probe.returncode != 0:
            raise LauncherError(
                f"The postgres user cannot reach {PG_DIR} (a parent directory is not traversable). "
                "Either `chmod o+x` the parent directories, or put the state elsewhere: "
                "GROUNDSWELL_STATE_DIR=/var/tmp/groundswell make up"
            )
    data = pg_data_dir()
    if not (data / "PG_VERSION").exists():
        say("creating the private PostgreSQL cluster (first run only) ...")
        shutil.rmtree(data, ignore_errors=True)
        result = subprocess.run(
            _as_pg_user([str(bins / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "--auth-local=trust",
                         "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]),
            capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/",
        )  # fmt: skip
        if result.returncode != 0:
            raise LauncherError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'groundswell.conf'\n")
    (data / "groundswell.conf").write_text(postgres_conf())
    (data / "pg_hba.conf").write_text(PG_HBA)
    for name in ("groundswell.conf", "pg_hba.conf"):
        _chown_pg(data / name)


def spawn_postgres() -> ManagedProcess:
    _prepare_postgres()
    return spawn(
        "postgres", "postgres", [str(pg_bin_dir() / "postgres"), "-D", str(pg_data_dir())],
        port=PG_PORT, as_user=_pg_user(),
    )  # fmt: skip


def postgres_ready() -> bool:
    result = subprocess.run(
        [str(pg_bin_dir() / "pg_isready"), "-q", "-h", HOST, "-p", str(PG_PORT), "-t", "2"],
        stdin=subprocess.DEVNULL, capture_output=True,
    )  # fmt: skip
    return result.returncode == 0


def _psql(sql: str) -> str:
    result = subprocess.run(
        [str(pg_bin_dir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(pg_socket_dir()),
         "-p", str(PG_PORT), "-U", PG_SUPERUSER, "-d", "postgres"],
        input=sql, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise LauncherError(f"psql failed: {result.stderr.strip()}\nSQL: {sql}")
    return result.stdout


def _ensure_databases_local() -> None:
    """The groundswell role (password groundswell) and one database per service, created if missing."""
    statements = [
        f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') THEN
    CREATE ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{PG_PASSWORD}';
  END IF;
END $$;"""
    ]
    for service in SERVICES:
        db = f"groundswell_{service}"
        statements.append(
            f"SELECT 'CREATE DATABASE {db} OWNER {PG_USER}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec"
        )
    _psql("\n".join(statements) + "\n")


async def _ensure_databases_external() -> None:
    # Not at the top: `make stop`/`make status` import the launcher with the system Python, without the venv.
    import asyncpg  # type: ignore[import-untyped]

    server = os.environ["DATABASE_URL"]
    maintenance = server if database_name(server) else with_database(server, "postgres")
    conn = await asyncpg.connect(libpq_url(maintenance), timeout=10)
    try:
        for service in SERVICES:
            db = f"groundswell_{service}"
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
                await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()


def ensure_databases() -> None:
    if POSTGRES_EXTERNAL:
        try:
            run_in_thread(_ensure_databases_external)
        except Exception as exc:  # noqa: BLE001 - an operator-managed server may not let us create databases
            say(f"could not check/create the groundswell_<service> databases on DATABASE_URL's server: {exc}")
        return
    _ensure_databases_local()


def wait_postgres(process: ManagedProcess | None, timeout: float | None = None) -> None:
    timeout = timeout or start_timeout("postgres")
    if not wait_until(postgres_ready, timeout, process):
        raise not_ready("postgres", process, timeout, f"pg_isready on {HOST}:{PG_PORT}")


def start_postgres(timeout: float | None = None) -> ManagedProcess | None:
    """Start the private PostgreSQL cluster (if not running), wait for it, create missing databases."""
    if POSTGRES_EXTERNAL:
        raise LauncherError("DATABASE_URL is set: PostgreSQL is not the launcher's to start.")
    return start_once(
        "postgres",
        preflight=_preflight,
        spawn=spawn_postgres,
        wait=lambda process: wait_postgres(process, timeout),
        then=ensure_databases,
    )


def stop_postgres(sig: int = signal.SIGINT) -> bool:
    """Stop the private cluster (SIGINT: fast shutdown; SIGKILL to crash it)."""
    return stop_process("postgres", sig)


def restart_postgres(timeout: float | None = None) -> ManagedProcess | None:
    stop_postgres()
    return start_postgres(timeout)
