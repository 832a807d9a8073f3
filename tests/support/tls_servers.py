"""A Kafka broker that takes only TLS clients (SASL_SSL with PLAIN and SCRAM-SHA-512 users, SSL with client
certificates) and a PostgreSQL server that takes only TLS connections, for the tests of managed services
(tests/infra/test_managed_services.py). Both run from the stack's own Kafka jars and PostgreSQL binaries
(deploy/local), as processes the launcher records (`make stop` stops a leftover), on ports of their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.local.config import HOST, PORT_OFFSET, STATE_DIR, start_timeout
from deploy.local.kafka import _kafka_metadata_ok, kafka_tool_command, new_cluster_id
from deploy.local.postgres import PG_DIR, _as_pg_user, _chown_pg, _pg_user, pg_bin_dir
from deploy.local.probes import check_ports, not_ready, run_in_thread, wait_until
from deploy.local.processes import ManagedProcess, spawn, stop_process
from tests.support.certs import Pki

# 9640-9644 shifted by GROUNDSWELL_PORT_OFFSET like every port: no stack's port (deploy/local/config.py: 8000-8004
# and the instances' +100s, 8443, 9092-9093, 5433, 1025-1026, 1080) ends in 640-644, so no two stacks' collide.
KAFKA_SASL_SSL_PORT = 9640 + PORT_OFFSET
KAFKA_SSL_PORT = 9641 + PORT_OFFSET
KAFKA_INTERNAL_PORT = 9642 + PORT_OFFSET  # the broker's own (inter-broker) listener, plaintext, loopback only
KAFKA_CONTROLLER_PORT = 9643 + PORT_OFFSET
PG_TLS_PORT = 9644 + PORT_OFFSET

# A broker that lives for one test module: compile less and collect garbage on one thread, so it is ready sooner
# on a busy machine (JAVA_TOOL_OPTIONS: kafka_tool_command's command line stays the tools' own).
QUICK_JVM = {**os.environ, "JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}
KAFKA_NAME = "tls-kafka"
POSTGRES_NAME = "tls-postgres"
TLS_DIR = STATE_DIR / "tls"


@dataclass(frozen=True)
class User:
    name: str
    password: str


PLAIN_USER = User("organiser-relay", "plain-secret-1")
SCRAM_USER = User("network-scram", "scram-secret-2")
PG_USER = User("groundswell", "pg-tls-secret-3")


def _broker_properties(directory: Path, pki: Pki) -> str:
    plain = f'user_{PLAIN_USER.name}="{PLAIN_USER.password}"'
    return f"""# Written by tests/support/tls_servers.py: one KRaft node that accepts only TLS clients.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={HOST}:{KAFKA_CONTROLLER_PORT}
listeners=SASL_SSL://{HOST}:{KAFKA_SASL_SSL_PORT},SSL://{HOST}:{KAFKA_SSL_PORT},INTERNAL://{HOST}:{KAFKA_INTERNAL_PORT},\
CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}
advertised.listeners=SASL_SSL://{HOST}:{KAFKA_SASL_SSL_PORT},SSL://{HOST}:{KAFKA_SSL_PORT},\
INTERNAL://{HOST}:{KAFKA_INTERNAL_PORT}
listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
log.dirs={directory / "data"}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=1
num.io.threads=2
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required {plain};
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={pki.server_keystore}
ssl.truststore.type=PEM
ssl.truststore.location={pki.ca}
listener.name.ssl.ssl.client.auth=required
"""


def start_tls_kafka(pki: Pki) -> ManagedProcess:
    """A fresh single-node broker (its SCRAM user written into the storage as it is formatted), once ready."""
    stop_process(KAFKA_NAME)  # a leftover of an interrupted run
    check_ports({"TLS test Kafka": KAFKA_SASL_SSL_PORT, "TLS test Kafka (SSL)": KAFKA_SSL_PORT,
                 "TLS test Kafka (internal)": KAFKA_INTERNAL_PORT,
                 "TLS test Kafka (controller)": KAFKA_CONTROLLER_PORT})  # fmt: skip
    directory = TLS_DIR / "kafka"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    properties = directory / "server.properties"
    properties.write_text(_broker_properties(directory, pki))
    scram = f"SCRAM-SHA-512=[name={SCRAM_USER.name},password={SCRAM_USER.password}]"
    formatted = subprocess.run(
        kafka_tool_command("kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={new_cluster_id()}",
                           f"--config={properties}", f"--add-scram={scram}"),
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=QUICK_JVM,
    )  # fmt: skip
    if formatted.returncode != 0:
        raise RuntimeError(f"formatting the TLS test broker's storage failed:\n{formatted.stdout}{formatted.stderr}")
    process = spawn(KAFKA_NAME, "kafka", kafka_tool_command("kafka.Kafka", str(properties), heap="384m"),
                    port=KAFKA_SASL_SSL_PORT, env=QUICK_JVM)  # fmt: skip
    timeout = start_timeout("kafka")
    internal = f"{HOST}:{KAFKA_INTERNAL_PORT}"
    if not run_in_thread(lambda: _kafka_metadata_ok(internal, timeout)):
        stop_process(KAFKA_NAME)
        raise not_ready(KAFKA_NAME, process, timeout, f"no metadata answer from {internal}")
    return process


def _postgres_conf(pki_dir: Path, socket_dir: Path) -> str:
    return f"""# Written by tests/support/tls_servers.py: TCP connections only over TLS (pg_hba.conf).
listen_addresses = '{HOST}'
port = {PG_TLS_PORT}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
max_connections = 20
shared_buffers = 16MB
fsync = off
ssl = on
ssl_cert_file = '{pki_dir / "server.pem"}'
ssl_key_file = '{pki_dir / "server.key"}'
password_encryption = scram-sha-256
"""


PG_HBA = """# Written by tests/support/tls_servers.py: TLS or nothing over TCP.
local     all   all                   trust
hostssl   all   all   127.0.0.1/32    scram-sha-256
hostnossl all   all   127.0.0.1/32    reject
"""


def start_tls_postgres(pki: Pki) -> ManagedProcess:
    """A private PostgreSQL cluster beside the stack's (initdb once, kept), serving `pki`'s server certificate."""
    stop_process(POSTGRES_NAME)
    check_ports({"TLS test PostgreSQL": PG_TLS_PORT})
    home = PG_DIR.with_name(PG_DIR.name + "-tls")  # where the stack's cluster lives: the postgres user reaches it
    data, socket_dir, pki_dir = home / "data", home / "sock", home / "pki"
    for directory in (home, socket_dir, pki_dir):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        _chown_pg(directory)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        password_file = pki_dir / "password"
        password_file.write_text(PG_USER.password + "\n")
        _chown_pg(password_file)
        initdb = subprocess.run(
            _as_pg_user([str(pg_bin_dir() / "initdb"), "-D", str(data), "-U", PG_USER.name, f"--pwfile={password_file}",
                         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                         "--no-instructions", "--no-sync"]),
            capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/",
        )  # fmt: skip
        password_file.unlink()
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb of the TLS test cluster failed:\n{initdb.stdout}{initdb.stderr}")
    for source, name in ((pki.server_cert, "server.pem"), (pki.server_key, "server.key")):
        shutil.copyfile(source, pki_dir / name)
        (pki_dir / name).chmod(0o600)
        _chown_pg(pki_dir / name)
    (data / "postgresql.auto.conf").write_text(_postgres_conf(pki_dir, socket_dir))
    (data / "pg_hba.conf").write_text(PG_HBA)
    for name in ("postgresql.auto.conf", "pg_hba.conf"):
        _chown_pg(data / name)
    process = spawn(POSTGRES_NAME, "postgres", [str(pg_bin_dir() / "postgres"), "-D", str(data)], port=PG_TLS_PORT,
                    as_user=_pg_user())  # fmt: skip
    timeout = start_timeout("postgres")
    ready = [str(pg_bin_dir() / "pg_isready"), "-q", "-h", str(socket_dir), "-p", str(PG_TLS_PORT), "-t", "2"]
    if not wait_until(lambda: subprocess.run(ready, capture_output=True).returncode == 0, timeout, process):
        stop_process(POSTGRES_NAME)
        raise not_ready(POSTGRES_NAME, process, timeout, f"pg_isready on {socket_dir}")
    return process


def tls_database_url(pki_ca: Path, *, database: str = "postgres", sslmode: str = "verify-full") -> str:
    """The URL a service would be given for the TLS server: libpq's TLS parameters in DATABASE_URL."""
    return (f"postgresql+asyncpg://{PG_USER.name}:{PG_USER.password}@{HOST}:{PG_TLS_PORT}/{database}"
            f"?sslmode={sslmode}&sslrootcert={pki_ca}")  # fmt: skip


def stop_tls_servers() -> None:
    for name in (KAFKA_NAME, POSTGRES_NAME):
        stop_process(name)
