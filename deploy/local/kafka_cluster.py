"""A Kafka cluster of several KRaft nodes on this machine, from the same jars as the local broker (kafka.py): each
node is a broker and a controller, with its own ports, configuration and storage under
.run/kafka-cluster/node-<n>, recorded as `kafka-<n>`, so `make stop` stops it with the rest of its stack.

The fault drill (tests/scale) runs one beside a second stack, whose services point at it with
KAFKA_BOOTSTRAP_SERVERS (docs/scaling.md). The usual stack's single broker (kafka.py) does not use this.

Ports: node n listens on 9190+n and its controller on 9290+n, shifted by GROUNDSWELL_KAFKA_CLUSTER_OFFSET (default
GROUNDSWELL_PORT_OFFSET): never a port of the stack it runs beside (9092, 9093, ...).

    python -m deploy.local.kafka_cluster start [--nodes 3]   # prints the bootstrap list
    python -m deploy.local.kafka_cluster stop
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from deploy.local.config import CACHE_DIR, HOST, PORT_OFFSET, STATE_DIR, LauncherError, say, start_timeout
from deploy.local.kafka import (
    COMMON_PROPERTIES,
    LOG4J2_BROKER,
    LOG4J2_TOOLS,
    brokers_ready,
    check_tools,
    ensure_kafka_libs,
    kafka_command,
    kafka_version,
    kraft_node_properties,
    new_cluster_id,
    replication_properties,
    storage_format_command,
)
from deploy.local.probes import check_ports, not_ready
from deploy.local.processes import ManagedProcess, launcher_lock, read_record, recorded_names, spawn, stop_records

CLUSTER_DIR = STATE_DIR / "kafka-cluster"
CLUSTER_OFFSET = int(os.environ.get("GROUNDSWELL_KAFKA_CLUSTER_OFFSET") or PORT_OFFSET)
BROKER_PORT_BASE = 9190
CONTROLLER_PORT_BASE = 9290
NODE_PREFIX = "kafka-"


def node_name(node: int) -> str:
    return f"{NODE_PREFIX}{node}"


def broker_port(node: int, offset: int = CLUSTER_OFFSET) -> int:
    return BROKER_PORT_BASE + offset + node


def controller_port(node: int, offset: int = CLUSTER_OFFSET) -> int:
    return CONTROLLER_PORT_BASE + offset + node


def bootstrap_servers(nodes: int, offset: int = CLUSTER_OFFSET) -> str:
    """The comma-separated list a client bootstraps from: every node's broker listener."""
    return ",".join(f"{HOST}:{broker_port(n, offset)}" for n in range(1, nodes + 1))


def node_dir(node: int) -> Path:
    return CLUSTER_DIR / f"node-{node}"


def node_properties(node: int, nodes: int, data: Path, offset: int = CLUSTER_OFFSET) -> str:
    """Node `node`'s server.properties: every node votes for the controller (a static quorum); new topics and the
    cluster's internal ones get three copies (as many as there are nodes, if fewer). min.insync.replicas stays
    Kafka's default (1) on purpose: topics set their own (shared/topics.py), which the drill checks from the cluster."""
    voters = ",".join(f"{n}@{HOST}:{controller_port(n, offset)}" for n in range(1, nodes + 1))
    node_lines = kraft_node_properties(node, f"controller.quorum.voters={voters}", broker_port(node, offset),
                                       controller_port(node, offset), data)  # fmt: skip
    return f"""# Written by deploy/local/kafka_cluster.py on every start: node {node} of a {nodes}-node KRaft cluster.
{node_lines}{replication_properties(min(3, nodes))}{COMMON_PROPERTIES}"""


def _formatted_template(nodes: int) -> Path:
    """Freshly formatted, never started storage of every node, kept in the cache: formatting runs a JVM per node
    (a minute on a busy machine), and a drill's cluster is new every time. Ports are not in it (only in
    server.properties), so any offset can use it."""
    return CACHE_DIR / f"kafka-{kafka_version()}-cluster-of-{nodes}"


def _cluster_id(template: Path) -> str:
    path = template / "cluster-id"
    if not path.exists() or not path.read_text().strip():
        template.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"cluster-id.{os.getpid()}.tmp")
        draft.write_text(new_cluster_id() + "\n")
        draft.replace(path)
    return path.read_text().strip()


def _format_template(nodes: int, libs: Path, template: Path) -> None:
    """Format every node's storage into `template` (in parallel), once."""
    cluster_id = _cluster_id(template)
    staging = template / f"staging-{os.getpid()}"
    formats: list[tuple[int, subprocess.Popen[str]]] = []
    for node in range(1, nodes + 1):
        directory = staging / f"node-{node}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "server.properties").write_text(node_properties(node, nodes, directory / "data"))
        (directory / "log4j2-tools.xml").write_text(LOG4J2_TOOLS)
        command = storage_format_command(libs, cluster_id, directory, standalone=False)
        formats.append((node, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               text=True, stdin=subprocess.DEVNULL)))  # fmt: skip
    try:
        for node, process in formats:
            output, _ = process.communicate()
            if process.returncode != 0:
                raise LauncherError(f"Formatting the storage of Kafka node {node} failed:\n{output}")
        for node in range(1, nodes + 1):
            target = template / f"node-{node}"
            if not target.exists():
                (staging / f"node-{node}" / "data").replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _prepare(nodes: int, libs: Path) -> None:
    """Every node's configuration written; the storage of a node never started, copied from the formatted template."""
    template = _formatted_template(nodes)
    if not all((template / f"node-{n}" / "meta.properties").exists() for n in range(1, nodes + 1)):
        say(f"formatting the storage of a {nodes}-node Kafka cluster (first run only) ...")
        _format_template(nodes, libs, template)
    for node in range(1, nodes + 1):
        directory = node_dir(node)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "server.properties").write_text(node_properties(node, nodes, directory / "data"))
        (directory / "log4j2.xml").write_text(LOG4J2_BROKER)
        if not (directory / "data" / "meta.properties").exists():
            shutil.rmtree(directory / "data", ignore_errors=True)
            shutil.copytree(template / f"node-{node}", directory / "data")


def start_cluster(nodes: int = 3, timeout: float | None = None) -> str:
    """Start the nodes not running yet and wait until every one has registered; the bootstrap list.

    If they do not all come up, the nodes this call started are stopped again."""
    if nodes < 1:
        raise LauncherError("a cluster needs at least one node")
    check_tools()
    bootstrap = bootstrap_servers(nodes)
    timeout = timeout or start_timeout("kafka")
    with launcher_lock():
        missing = [n for n in range(1, nodes + 1) if read_record(node_name(n)) is None]
        check_ports({f"Kafka node {n}": port for n in missing for port in (broker_port(n), controller_port(n))})
        libs = ensure_kafka_libs()
        _prepare(nodes, libs)
        started: list[ManagedProcess] = []
        try:
            for node in missing:
                say(f"starting Kafka node {node} on port {broker_port(node)} ...")
                started.append(spawn(node_name(node), "kafka", kafka_command(libs, node_dir(node), quick_start=True),
                                     port=broker_port(node)))  # fmt: skip
            if not brokers_ready(bootstrap, nodes, timeout):
                dead = next((p for p in started if p.poll() is not None), started[0] if started else None)
                raise not_ready(dead.name if dead else "kafka cluster", dead, timeout,
                                f"{nodes} brokers in a metadata answer from {bootstrap}")  # fmt: skip
        except BaseException:
            stop_records([p.record for p in started])
            raise
    return bootstrap


def node_names() -> list[str]:
    """The recorded nodes of this state directory's cluster."""
    return [n for n in recorded_names() if n.startswith(NODE_PREFIX) and n[len(NODE_PREFIX) :].isdigit()]


def stop_cluster(sig: int = signal.SIGTERM) -> list[str]:
    """Stop every node (SIGTERM: a controlled shutdown, all at once); the names stopped."""
    records = [r for n in node_names() if (r := read_record(n)) is not None]
    stop_records(records, sig)
    return [r.name for r in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.kafka_cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start the nodes (if not running); prints the bootstrap list")
    start.add_argument("--nodes", type=int, default=3)
    sub.add_parser("stop", help="stop every node")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start_cluster(args.nodes), flush=True)
        else:
            say("stopped " + (", ".join(stop_cluster()) or "nothing"))
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
