"""The local launcher and what it runs, against the real processes (see docs/operations.md)."""

from __future__ import annotations

import base64
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from deploy.local import kafka, launcher


def unique_address(local: str = "person") -> str:
    return f"{local}-{uuid.uuid4().hex[:10]}@example.org"


def send(message: EmailMessage) -> None:
    with smtplib.SMTP(launcher.HOST, launcher.SMTP_CATCHER_SMTP_PORT, timeout=10) as smtp:
        smtp.send_message(message)


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


# --- SMTP catcher -----------------------------------------------------------------------------------
def test_catcher_shows_a_message_sent_with_smtplib_on_its_api_and_pages(catcher: httpx.Client) -> None:
    to = unique_address("ada")
    message = EmailMessage()
    message["From"] = "Groundswell <hello@groundswell.localhost>"
    message["To"] = f"Ada Lovelace <{to}>"
    message["Subject"] = "Welcome to the network, Ada"
    message["List-Unsubscribe"] = "<http://localhost:8000/unsubscribe?token=t>"
    message.set_content("Dear Ada,\nthanks for joining.\n")
    message.add_alternative("<p>Dear Ada,</p><p>thanks for joining.</p>", subtype="html")
    ics = b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"
    message.add_attachment(ics, maintype="text", subtype="calendar", filename="meeting.ics")
    send(message)

    [caught] = catcher.get("/api/messages", params={"to": to, "wait": 5}).json()
    assert caught["mail_from"] == "hello@groundswell.localhost"
    assert caught["rcpt_tos"] == [to]
    assert caught["to"] == [to]
    assert caught["subject"] == "Welcome to the network, Ada"
    assert caught["headers"]["List-Unsubscribe"] == "<http://localhost:8000/unsubscribe?token=t>"
    assert caught["text"] == "Dear Ada,\nthanks for joining.\n"
    assert "<p>Dear Ada,</p>" in caught["html"]
    assert caught["attachments"] == [{"filename": "meeting.ics", "content_type": "text/calendar", "size": len(ics)}]

    assert catcher.get(f"/api/messages/{caught['id']}").json()["subject"] == caught["subject"]
    assert b"Subject: Welcome to the network, Ada" in catcher.get(f"/api/messages/{caught['id']}/raw").content
    assert "Welcome to the network, Ada" in catcher.get("/").text
    page = catcher.get(f"/messages/{caught['id']}").text
    assert "thanks for joining." in page and "meeting.ics" in page
    since = catcher.get("/api/messages", params={"to": to, "since": str(caught["id"])}).json()
    assert since == []


def test_tempfail_recipient_is_refused_twice_then_accepted(catcher: httpx.Client) -> None:
    to = unique_address("tempfail")
    replies = []
    for _ in range(3):
        with smtplib.SMTP(launcher.HOST, launcher.SMTP_CATCHER_SMTP_PORT, timeout=10) as smtp:
            try:
                smtp.sendmail("hello@groundswell.localhost", [to], b"Subject: retry me\r\n\r\nhi\r\n")
                replies.append(250)
            except smtplib.SMTPRecipientsRefused as refused:
                code, text = refused.recipients[to]
                replies.append(code)
                assert text == b"4.3.0 Try again later"
    assert replies == [451, 451, 250]
    assert len(catcher.get("/api/messages", params={"to": to}).json()) == 1


def test_catcher_offers_pipelining_and_answers_a_group_of_commands_in_order(catcher: httpx.Client) -> None:
    ok, refused = unique_address("piped"), unique_address("reject")
    with smtplib.SMTP(launcher.HOST, launcher.SMTP_CATCHER_SMTP_PORT, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("pipelining")
        # A refused recipient: DATA is refused too (no recipient), and the connection goes on.
        smtp.sock.sendall(f"MAIL FROM:<hello@groundswell.localhost>\r\nRCPT TO:<{refused}>\r\nDATA\r\n".encode())
        assert [smtp.getreply()[0] for _ in range(3)] == [250, 550, 503]
        smtp.rset()
        smtp.sock.sendall(f"MAIL FROM:<hello@groundswell.localhost>\r\nRCPT TO:<{ok}>\r\nDATA\r\n".encode())
        assert [smtp.getreply()[0] for _ in range(3)] == [250, 250, 354]
        smtp.sock.sendall(b"Subject: piped\r\n\r\nhi\r\n.\r\n")
        assert smtp.getreply()[0] == 250
    [caught] = catcher.get("/api/messages", params={"to": ok, "wait": 5}).json()
    assert caught["subject"] == "piped"
    assert catcher.get("/api/messages", params={"to": refused}).json() == []


def test_reject_recipient_is_always_refused_with_550(catcher: httpx.Client) -> None:
    to = unique_address("reject")
    for _ in range(3):
        with (
            smtplib.SMTP(launcher.HOST, launcher.SMTP_CATCHER_SMTP_PORT, timeout=10) as smtp,
            pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
        ):
            smtp.sendmail("hello@groundswell.localhost", [to], b"Subject: no\r\n\r\nhi\r\n")
        assert refused.value.recipients[to] == (550, b"5.1.1 No such user")
    assert catcher.get("/api/messages", params={"to": to}).json() == []


@pytest.mark.fault
def test_catcher_keeps_caught_mail_across_a_restart(catcher: httpx.Client) -> None:
    to = unique_address("kept")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.org", to, "Still here after a restart"
    message.set_content("body")
    send(message)
    assert catcher.get("/api/messages", params={"to": to, "wait": 5}).json()

    assert launcher.stop_smtp_catcher()
    launcher.start_smtp_catcher()

    [kept] = catcher.get("/api/messages", params={"to": to}).json()
    assert kept["subject"] == "Still here after a restart" and kept["text"] == "body\n"


# --- Kafka --------------------------------------------------------------------------------------------
async def test_kafka_answers_metadata_and_never_creates_topics_on_its_own(infra: None) -> None:
    assert launcher.kafka_ready(10)
    topic = f"launcher-test-unknown-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=launcher.KAFKA_BOOTSTRAP, request_timeout_ms=3000)
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await producer.send_and_wait(topic, b"nobody should read this")
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()


def test_kafka_storage_formats_under_a_cluster_id_that_begins_with_a_dash(tmp_path: Path) -> None:
    """Issue #21: about one id in 64 began with '-', and Kafka's StorageTool took it for an option."""
    cluster_id = base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().rstrip("=")
    assert cluster_id.startswith("-")
    kafka.write_kafka_config(tmp_path)

    kafka.format_kafka_storage(kafka.ensure_kafka_libs(), cluster_id, tmp_path)

    assert f"cluster.id={cluster_id}" in (tmp_path / "data" / "meta.properties").read_text().splitlines()


def test_a_new_cluster_id_is_drawn_again_when_it_would_begin_with_a_dash() -> None:
    draws = iter([b"\xf8" + bytes(15), b"\x10" + bytes(15)])

    cluster_id = kafka.new_cluster_id(lambda: next(draws))

    assert cluster_id == base64.urlsafe_b64encode(b"\x10" + bytes(15)).decode().rstrip("=")
    assert not cluster_id.startswith("-")


@pytest.mark.fault
async def test_stopped_kafka_starts_again_with_its_topics(infra: None) -> None:
    if launcher.KAFKA_EXTERNAL:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS points at a broker the launcher does not run")
    topic = f"launcher-test-kept-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    await admin.close()

    assert launcher.stop_kafka()
    assert launcher.read_record("kafka") is None
    assert not launcher.kafka_ready(1)
    launcher.start_kafka()
    assert launcher.kafka_ready(10)

    admin = AIOKafkaAdminClient(bootstrap_servers=launcher.KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        assert topic in await admin.list_topics()
        await admin.delete_topics([topic])
    finally:
        await admin.close()


# --- PostgreSQL ---------------------------------------------------------------------------------------
async def test_each_service_has_its_own_database_reachable_with_the_groundswell_password(infra: None) -> None:
    for service in launcher.SERVICES:
        url = launcher.database_url(service)
        assert url.endswith(f"/groundswell_{service}")
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            assert await conn.fetchval("SELECT current_database()") == f"groundswell_{service}"
            assert await conn.fetchval("SELECT current_user") == "groundswell"
        finally:
            await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(asyncpg_dsn(launcher.database_url("membership")).replace(":groundswell@", ":wrong@"))


@pytest.mark.fault
async def test_restarted_postgres_keeps_committed_rows(infra: None) -> None:
    if launcher.POSTGRES_EXTERNAL:
        pytest.skip("DATABASE_URL points at a server the launcher does not run")
    scratch = f"launcher_test_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(asyncpg_dsn(launcher.database_url("campaigns")))
    await conn.execute(f"CREATE TABLE {scratch} (note text)")
    await conn.execute(f"INSERT INTO {scratch} VALUES ('committed before the restart')")
    await conn.close()

    launcher.restart_postgres()

    conn = await asyncpg.connect(asyncpg_dsn(launcher.database_url("campaigns")))
    try:
        assert await conn.fetchval(f"SELECT note FROM {scratch}") == "committed before the restart"
    finally:
        await conn.execute(f"DROP TABLE {scratch}")
        await conn.close()


# --- Refusing to start --------------------------------------------------------------------------------
def test_a_port_held_by_another_program_is_named_in_the_refusal() -> None:
    with socket.socket() as squatter:
        squatter.bind((launcher.HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert launcher.port_in_use(port)
        with pytest.raises(launcher.LauncherError) as refusal:
            launcher.check_ports({"gateway": port})
    message = str(refusal.value)
    assert f"{launcher.HOST}:{port} (gateway)" in message and f"pid {os.getpid()}" in message
    assert "Nothing was started" in message
    assert not launcher.port_in_use(port)


def test_launcher_refuses_to_start_anything_when_a_port_is_taken(tmp_path: Path) -> None:
    """A second launcher (own state dir) finds the gateway port taken and starts nothing at all."""
    with socket.socket() as squatter:
        squatter.bind((launcher.HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
        env.update(GROUNDSWELL_STATE_DIR=str(tmp_path / "state"), GATEWAY_PORT=str(port))
        result = subprocess.run(
            [sys.executable, "-m", "deploy.local.launcher", "up"],
            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{launcher.HOST}:{port} (gateway) is in use" in result.stderr
    assert "Nothing was started" in result.stderr
    pids = tmp_path / "state" / "pids"
    assert not pids.exists() or not list(pids.iterdir())


# --- Services and the gateway -------------------------------------------------------------------------
def test_gateway_config_routes_every_prefix_and_nginx_accepts_it(tmp_path: Path) -> None:
    conf = launcher.render_nginx_conf("local")
    for path, service in launcher.ROUTES.items():
        if path == "/":
            assert f"location / {{\n            proxy_pass http://{service};" in conf
        elif path.endswith("/"):
            assert f"location ^~ {path} {{\n            proxy_pass http://{service};" in conf
        else:
            assert f"location = {path} {{\n            proxy_pass http://{service};" in conf
            assert f"location ^~ {path}/ {{\n            proxy_pass http://{service};" in conf
    assert launcher.ROUTES["/preferences"] == launcher.ROUTES["/unsubscribe"] == "membership"
    for prefix, nested in launcher.NESTED_ROUTES.items():  # a person's attendances are events', under people
        block = conf.split(f"location ^~ {prefix}/ {{", 1)[1].split("\n        }", 1)[0]
        for pattern, service in nested.items():
            assert f"location ~ {pattern} {{ proxy_pass http://{service}; }}" in block
    for target in ("local", "docker"):
        conf_file = tmp_path / f"{target}.conf"
        conf_file.write_text(
            launcher.render_nginx_conf(target).replace("/var/run/nginx.pid", str(tmp_path / "nginx.pid"))
            .replace("/var/cache/nginx", str(tmp_path)).replace("user nginx;", "")
            .replace("server events:", "server 127.0.0.1:").replace("server membership:", "server 127.0.0.1:")
            .replace("server notifications:", "server 127.0.0.1:").replace("server campaigns:", "server 127.0.0.1:")
        )  # fmt: skip
        check = subprocess.run([launcher.nginx_binary(), "-t", "-q", "-p", str(tmp_path), "-c", str(conf_file),
                                "-e", "stderr"], capture_output=True, text=True)  # fmt: skip
        assert check.returncode == 0, check.stderr


def _running_services() -> list[str]:
    return [s for s in launcher.SERVICES if launcher.read_record(s) is not None]


def test_gateway_reaches_every_running_service_and_keeps_the_request_id(full_stack: None) -> None:
    running = _running_services()
    assert running, "no service runs"
    with httpx.Client(base_url=launcher.GATEWAY_URL, timeout=10) as client:
        for service in running:
            response = client.get(f"/static/{service}/groundswell.css", headers={"X-Request-ID": f"test-{service}"})
            assert response.status_code == 200, (service, response.text)
            assert response.headers.get_list("X-Request-ID") == [f"test-{service}"]
        generated = client.get("/_gateway/healthz").headers["X-Request-ID"]
        assert len(generated) == 32


@pytest.mark.fault
def test_an_extra_instance_gets_its_own_port_pid_and_log_and_can_be_killed(full_stack: None) -> None:
    if launcher.read_record("membership") is None:
        pytest.skip("membership does not run")
    extra = launcher.start_service("membership", instance="b")
    try:
        assert extra.name == "membership-b" and extra.port not in launcher.SERVICE_PORTS.values()
        assert launcher.service_ready("membership", 60, instance="b"), launcher.log_tail("membership-b")
        assert launcher.log_path("membership-b").exists()
        assert (launcher.PID_DIR / "membership-b.pid").read_text().strip() == str(extra.pid)
    finally:
        assert launcher.kill_service("membership", instance="b")
    assert extra.wait(10) == -signal.SIGKILL
    assert launcher.read_record("membership-b") is None
    assert launcher.service_ready("membership", 10), "the main instance must be unaffected"


def test_organiser_command_prints_a_link_that_opens_the_password_page_through_the_gateway(full_stack: None) -> None:
    """Issue #16: the first organiser, made as the README says (`make organiser` runs this), lands in the running
    stack's membership database, and its link carries the stack's address and verifies with the stack's key."""
    result = subprocess.run(
        [sys.executable, "-m", "deploy.local.launcher", "organiser", "--email", unique_address("first-organiser")],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    printed = dict(re.findall(r"^(TOTP secret|set password link):\s+(\S+)$", result.stdout, re.M))
    link = printed["set password link"]
    assert link.startswith(f"{launcher.PUBLIC_BASE_URL}/organisers/set-password?token=")

    page = httpx.get(link, timeout=30)

    assert page.status_code == 200, page.text
    assert printed["TOTP secret"] in page.text and "otpauth://totp/" in page.text
