"""Kafka for the local stack: one KRaft node (broker and controller) whose jars Maven fetches once from
Maven Central, its configuration written on every start, its storage formatted on the first, and the
topics every service needs (auto-creation is off).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from deploy.local.config import (
    CACHE_DIR,
    HOST,
    KAFKA_BOOTSTRAP,
    KAFKA_CONTROLLER_PORT,
    KAFKA_DIR,
    KAFKA_EXTERNAL,
    KAFKA_POM,
    KAFKA_PORT,
    LOG_DIR,
    LauncherError,
    development_flag,
    rel,
    required_ports,
    say,
    start_timeout,
)
from deploy.local.probes import check_ports, not_ready, run_in_thread
from deploy.local.processes import (
    ManagedProcess,
    Step,
    finish_steps,
    log_path,
    log_tail,
    spawn,
    start_once,
    start_step,
    stop_process,
)


def _check_java() -> None:
    java = shutil.which("java")
    if not java:
        raise LauncherError(
            "Java is missing; Kafka needs Java 17 or newer. Install it with: "
            "sudo apt-get install -y openjdk-17-jre-headless"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match:
        major = int(match.group(1)) if match.group(1) != "1" else int(match.group(2) or 0)
        if major < 17:
            raise LauncherError(f"Kafka 4 needs Java 17 or newer; `java -version` says {major}. Install Java 17.")


def check_tools() -> None:
    """Java 17+, and Maven unless the jars are already in the cache; LauncherError says how to install them."""
    _check_java()
    if not _kafka_libs_ready() and not shutil.which("mvn"):
        raise LauncherError(
            "Maven (mvn) is missing; the launcher uses it once to fetch Kafka from Maven Central. "
            "Install it with: sudo apt-get install -y maven"
        )


def _preflight() -> None:
    check_tools()
    check_ports(required_ports(["kafka"]))


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", KAFKA_POM.read_text())
    if not match:
        raise LauncherError(f"{KAFKA_POM} does not declare <kafka.version>")
    return match.group(1).strip()


def kafka_libs_dir() -> Path:
    return CACHE_DIR / f"kafka-{kafka_version()}" / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()[:16]


def _kafka_libs_ready() -> bool:
    marker = kafka_libs_dir() / ".resolved"
    return marker.exists() and marker.read_text().strip() == _pom_digest()


def ensure_kafka_libs() -> Path:
    """Copy Kafka and its dependencies from Maven Central into the cache once (per pom.xml content)."""
    libs = kafka_libs_dir()
    if _kafka_libs_ready():
        return libs
    if not shutil.which("mvn"):
        raise LauncherError("Maven (mvn) is missing; install it with: sudo apt-get install -y maven")
    say(f"fetching Apache Kafka {kafka_version()} with Maven (first run only; about a minute) ...")
    staging = libs.with_name(f"libs.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with log_path("maven").open("ab") as out:
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if result.returncode != 0 or not list(staging.glob("kafka_*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise LauncherError(
            "Maven could not fetch Kafka (is Maven Central reachable? a proxy in ~/.m2/settings.xml?).\n"
            f"Last lines of {rel(log_path('maven'))}:\n{log_tail('maven')}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.replace(libs)
    (libs / ".resolved").write_text(_pom_digest() + "\n")
    return libs


def kafka_classpath() -> str:
    """The Java classpath of the broker and kafka-tools (ProducerPerformance, EndToEndLatency ...)."""
    return f"{ensure_kafka_libs()}/*"


def kafka_tool_command(main_class: str, *args: str, heap: str = "256m") -> list[str]:
    """A command running a Kafka tool class, e.g. org.apache.kafka.tools.ProducerPerformance."""
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    (KAFKA_DIR / "log4j2-tools.xml").write_text(LOG4J2_TOOLS)
    return [
        "java", f"-Xmx{heap}", f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2-tools.xml'}",
        "-cp", kafka_classpath(), main_class, *args,
    ]  # fmt: skip


LOG4J2_BROKER = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by deploy/local/kafka.py: the broker logs to stdout, which goes to .run/logs/kafka.log -->
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d{yyyy-MM-dd HH:mm:ss,SSS}] %-5p %m (%c{1.})%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/></Root>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="kafka.log" level="WARN"/>
    <Logger name="org.apache.kafka.raft" level="WARN"/>
    <Logger name="org.apache.kafka.image" level="WARN"/>
    <Logger name="org.apache.kafka.metadata" level="WARN"/>
    <Logger name="kafka.server.metadata" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
  </Loggers>
</Configuration>
"""

LOG4J2_TOOLS = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="%-5p %m%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
"""


def kafka_server_properties(data: Path = KAFKA_DIR / "data") -> str:
    """The node's server.properties, its logs and metadata in `data`."""
    quorum = f"controller.quorum.bootstrap.servers={HOST}:{KAFKA_CONTROLLER_PORT}"
    return f"""# Written by deploy/local/kafka.py on every start: a single-node KRaft cluster for development.
{kraft_node_properties(1, quorum, KAFKA_PORT, KAFKA_CONTROLLER_PORT, data)}min.insync.replicas=1
{replication_properties(1)}{COMMON_PROPERTIES}"""


def kraft_node_properties(node: int, quorum: str, port: int, controller_port: int, data: Path) -> str:
    """What every local node (a broker and a controller in one process) says of itself: its id, how it finds the
    controllers (`quorum`, one property line), its listeners on this machine and its storage in `data`."""
    return f"""process.roles=broker,controller
node.id={node}
{quorum}
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
metadata.log.dir={data}
"""


def replication_properties(replicas: int) -> str:
    """How many copies the cluster keeps of new topics and of its own internal ones (offsets, transactions)."""
    in_sync = min(2, replicas)
    return f"""default.replication.factor={replicas}
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={in_sync}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={in_sync}
"""


# What every local node runs with, whether alone or one of a cluster (deploy/local/kafka_cluster.py).
COMMON_PROPERTIES = """# Topics are created explicitly (python -m shared.topics create), never by a typo.
auto.create.topics.enable=false
num.partitions=1
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=-1
log.segment.bytes=104857600
log.cleaner.dedupe.buffer.size=16777216
"""


def write_kafka_config(directory: Path = KAFKA_DIR) -> None:
    """server.properties (data in `directory`/data) and the log4j2 files of the broker and the tools."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "server.properties").write_text(kafka_server_properties(directory / "data"))
    (directory / "log4j2.xml").write_text(LOG4J2_BROKER)
    (directory / "log4j2-tools.xml").write_text(LOG4J2_TOOLS)


# Kafka's reserved ids (Uuid.ZERO_UUID, Uuid.METADATA_TOPIC_ID), which Uuid.randomUuid never returns either.
_RESERVED_IDS = (bytes(16), bytes(15) + b"\x01")


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A cluster id as Kafka's own Uuid.randomUuid makes one: URL-safe base64 of 16 random bytes, drawn
    again while it would begin with '-' (which command-line tools read as an option) or is reserved."""
    while True:
        raw = random_bytes()
        cluster_id = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if raw not in _RESERVED_IDS and not cluster_id.startswith("-"):
            return cluster_id


def _kafka_cluster_id() -> str:
    """The id this node's storage is formatted with: made on the first run and kept in .run/kafka/cluster-id."""
    path = KAFKA_DIR / "cluster-id"
    if not path.exists() or not path.read_text().strip():  # empty: a first run stopped while writing it
        draft = path.with_name(f"cluster-id.{os.getpid()}.tmp")
        draft.write_text(new_cluster_id() + "\n")
        draft.replace(path)
    return path.read_text().strip()


# For short-lived nodes (the fault drill's cluster) on a busy machine: the JIT's first tier only and the serial
# collector start a JVM on much less CPU; a long-running broker wants the full JIT and G1.
QUICK_START_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


def storage_format_command(libs: Path, cluster_id: str, directory: Path, *, standalone: bool = True) -> list[str]:
    """StorageTool's format of the node configured in `directory`. standalone: the node is its cluster's only
    controller (the local broker); otherwise its server.properties lists the controllers (a cluster's node).

    Option values go as --option=value: an id that begins with '-' (made by an older launcher) is still a value.
    """
    return [
        "java", "-Xmx256m", *(() if standalone else QUICK_START_JVM),
        f"-Dlog4j2.configurationFile={directory / 'log4j2-tools.xml'}",
        "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format", *(["--standalone"] if standalone else []),
        f"--cluster-id={cluster_id}", f"--config={directory / 'server.properties'}",
    ]  # fmt: skip


def format_kafka_storage(libs: Path, cluster_id: str, directory: Path = KAFKA_DIR) -> None:
    """Format the storage of the node configured in `directory` (once: a formatted one is left alone)."""
    if (directory / "data" / "meta.properties").exists():
        return
    say("formatting Kafka storage (first run only) ...")
    result = subprocess.run(storage_format_command(libs, cluster_id, directory), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    if result.returncode != 0:
        raise LauncherError(f"Formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")


def kafka_command(libs: Path, directory: Path = KAFKA_DIR, *, quick_start: bool = False) -> list[str]:
    """The JVM running the node configured in `directory` (quick_start: QUICK_START_JVM, a smaller heap)."""
    jvm = ["-Xms128m", "-Xmx384m", *QUICK_START_JVM] if quick_start else [
        "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent"]  # fmt: skip
    return [
        "java", *jvm, "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={directory / 'log4j2.xml'}", f"-Dkafka.logs.dir={LOG_DIR}",
        "-cp", f"{libs}/*", "kafka.Kafka", str(directory / "server.properties"),
    ]  # fmt: skip


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library logger for a moment (aiokafka logs every refused connection while we poll)."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def _kafka_metadata_ok(bootstrap: str, timeout: float, brokers: int = 1) -> bool:
    with _quiet_logger("aiokafka"):
        return await _poll_kafka_metadata(bootstrap, timeout, brokers)


async def _poll_kafka_metadata(bootstrap: str, timeout: float, brokers: int = 1) -> bool:
    """True once a metadata answer names at least `brokers` brokers (polls up to `timeout`)."""
    # Not at the top: `make stop`/`make status` import the launcher with the system Python, without the venv.
    from aiokafka import AIOKafkaClient  # type: ignore[attr-defined]

    deadline = time.monotonic() + timeout
    while True:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, metadata_max_age_ms=1000)
        try:
            await asyncio.wait_for(client.bootstrap(), max(1.0, min(6.0, deadline - time.monotonic())))
            metadata = await asyncio.wait_for(client.fetch_all_metadata(), 6.0)
            if len(metadata.brokers()) >= brokers:
                return True
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        finally:
            with contextlib.suppress(Exception):
                await client.close()
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.5)


def kafka_ready(timeout: float = 5.0) -> bool:
    """True once the broker at KAFKA_BOOTSTRAP answers a metadata request (polls up to `timeout`)."""
    return brokers_ready(KAFKA_BOOTSTRAP, 1, timeout)


def brokers_ready(bootstrap: str, brokers: int, timeout: float = 5.0) -> bool:
    """True once a broker of `bootstrap` answers a metadata request naming `brokers` brokers (polls up to
    `timeout`): every node of a cluster has registered."""
    return bool(run_in_thread(lambda: _kafka_metadata_ok(bootstrap, timeout, brokers)))


def _prepare_kafka() -> Path:
    libs = ensure_kafka_libs()
    write_kafka_config()
    (KAFKA_DIR / "classpath").write_text(f"{libs}/*\n")
    format_kafka_storage(libs, _kafka_cluster_id())
    return libs


def spawn_kafka() -> ManagedProcess:
    libs = _prepare_kafka()
    return spawn("kafka", "kafka", kafka_command(libs), port=KAFKA_PORT)


def wait_kafka(process: ManagedProcess | None, timeout: float | None = None) -> None:
    timeout = timeout or start_timeout("kafka")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        if kafka_ready(min(5.0, max(0.5, deadline - time.monotonic()))):
            return
    raise not_ready("kafka", process, timeout, f"no metadata answer from {KAFKA_BOOTSTRAP}")


def start_kafka(timeout: float | None = None) -> ManagedProcess | None:
    """Start the local broker (if not running) and wait until it answers metadata requests."""
    if KAFKA_EXTERNAL:
        raise LauncherError(f"KAFKA_BOOTSTRAP_SERVERS={KAFKA_BOOTSTRAP} is set: Kafka is not the launcher's to start.")
    return start_once(
        "kafka", preflight=_preflight, spawn=spawn_kafka, wait=lambda process: wait_kafka(process, timeout)
    )


def stop_kafka(sig: int = signal.SIGTERM) -> bool:
    """Stop the local broker (SIGTERM: controlled shutdown; pass SIGKILL to crash it)."""
    return stop_process("kafka", sig)


def start_topics_step() -> Step:
    """Start `python -m shared.topics create` (the topics every service needs) as a one-off step."""
    env = {**os.environ, **development_flag(), "KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "shared.topics", "create"]
    return ("topics", "Creating Kafka topics", start_step("topics", command, env))


def create_topics() -> None:
    """`python -m shared.topics create`: the topics every service needs (auto-creation is off)."""
    finish_steps([start_topics_step()])
