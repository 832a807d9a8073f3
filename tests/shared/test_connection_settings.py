"""The Kafka security variables and DATABASE_URL's TLS parameters mean one thing everywhere, and settings that
would connect otherwise than they say are refused before anything connects (issue #19)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from deploy.local.postgres import database_url
from shared.config import Settings
from shared.database_url import libpq_url
from shared.kafka_security import KafkaTlsFileMissing, kafka_client_options


def settings(**values: str) -> Settings:
    return Settings(groundswell_dev=True, **values)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SASL_USERNAME"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "relay"}, "KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "relay", "kafka_sasl_password": "secret"}, "SASL_SSL"),
        ({"kafka_ssl_ca_file": "/etc/ssl/kafka-ca.pem"}, "KAFKA_SSL_CA_FILE"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "/etc/ssl/client.pem"}, "KAFKA_SSL_KEY_FILE"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI", "kafka_sasl_username": "a",
          "kafka_sasl_password": "b"}, "kafka_sasl_mechanism"),
    ],  # fmt: skip
)
def test_kafka_settings_that_would_connect_otherwise_than_they_say_are_refused_naming_the_variable(values, named):
    with pytest.raises(ValidationError, match=named):
        settings(**values)


def test_plaintext_is_the_default_and_gives_no_security_options():
    assert kafka_client_options(settings()) == {}


def test_sasl_ssl_verifies_the_brokers_against_the_system_authorities_when_no_ca_file_is_given():
    options = kafka_client_options(settings(kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism="scram-sha-512",
                                            kafka_sasl_username="relay", kafka_sasl_password="secret"))  # fmt: skip
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("relay", "secret")
    assert options["ssl_context"].check_hostname and options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_a_ca_file_that_is_not_there_is_named_before_anything_connects(tmp_path: Path):
    missing = tmp_path / "kafka-ca.pem"
    with pytest.raises(KafkaTlsFileMissing, match=f"KAFKA_SSL_CA_FILE={missing}"):
        kafka_client_options(settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=str(missing)))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+asyncpg://u:p@db.example.org:5432/gs?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem",
         "postgresql://u:p@db.example.org:5432/gs?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem"),
        ("postgresql+asyncpg://u:p@db.example.org/gs?ssl=require", "postgresql://u:p@db.example.org/gs?sslmode=require"),
        ("postgresql+asyncpg://u:p@127.0.0.1:5433/gs", "postgresql://u:p@127.0.0.1:5433/gs"),
    ],  # fmt: skip
)
def test_database_urls_reach_asyncpg_and_libpq_with_their_tls_parameters(url, expected):
    assert libpq_url(url) == expected


def test_each_service_keeps_the_tls_parameters_of_the_servers_database_url(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://gs:pw@pg.example.org/postgres?sslmode=verify-full"
                                       "&sslrootcert=/run/secrets/pg-ca.pem")  # fmt: skip
    assert database_url("events") == (
        "postgresql+asyncpg://gs:pw@pg.example.org/groundswell_events?sslmode=verify-full"
        "&sslrootcert=/run/secrets/pg-ca.pem"
    )


@pytest.mark.parametrize("value", ["0", "2.5", "-1", "soon", "7200"])
def test_a_delivery_lease_too_short_too_long_or_not_a_number_is_refused(value, monkeypatch):
    monkeypatch.setenv("DELIVERY_LEASE_SECONDS", value)
    with pytest.raises(ValidationError, match="delivery_lease_seconds"):
        settings()


def test_the_delivery_lease_is_30_seconds_unless_set(monkeypatch):
    monkeypatch.delenv("DELIVERY_LEASE_SECONDS", raising=False)
    assert settings().delivery_lease_seconds == 30.0
    monkeypatch.setenv("DELIVERY_LEASE_SECONDS", "6")
    assert settings().delivery_lease_seconds == 6.0


def test_membership_looks_for_overdue_data_downloads_every_30_seconds_unless_set(monkeypatch):
    monkeypatch.delenv("MEMBER_DATA_CHECK_SECONDS", raising=False)
    assert settings().member_data_check_seconds == 30.0
    monkeypatch.setenv("MEMBER_DATA_CHECK_SECONDS", "2")
    assert settings().member_data_check_seconds == 2.0
    monkeypatch.setenv("MEMBER_DATA_CHECK_SECONDS", "0")
    with pytest.raises(ValidationError, match="member_data_check_seconds"):
        settings()
