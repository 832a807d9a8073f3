"""Settings shared by every service, read from the environment (one meaning everywhere)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.database_url import libpq_url

# Signs every session, API key and emailed link: whoever knows it can act as any organiser or member.
SECRET_KEY_MIN_LENGTH = 32
# Used only with GROUNDSWELL_DEV=1 when no SECRET_KEY is set (a bare `python -m services.x` on a laptop).
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"
# Keys that were ever written down somewhere public (defaults, examples): never accepted outside development.
KNOWN_SECRET_KEYS = frozenset(
    {
        DEV_SECRET_KEY,
        "insecure-docker-trial-secret-change-me",
        "change-me",
        "changeme",
        "secret",
        "secret-key",
        "your-secret-key",
    }
)


class InsecureSecretKey(ValueError):
    """SECRET_KEY is missing, short or published, and GROUNDSWELL_DEV is not set."""


class InsecureKafkaSettings(ValueError):
    """The KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* variables contradict each other."""


class Settings(BaseSettings):
    """The environment variables of ../shared/ARCHITECTURE.md plus a few operational knobs."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    service_name: str = "groundswell"
    instance: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_replication_factor: int = 1
    # None: 2 from a replication factor of 3, else the cluster's default (shared.topics.min_insync_for)
    kafka_min_insync_replicas: int | None = None
    kafka_partitions: int = 6
    # How soon a consumer group notices a dead instance and hands its partitions to the others (docs/scaling.md):
    # 6 s is the least a broker accepts by default (group.min.session.timeout.ms); heartbeats at a sixth of it.
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1000
    # How every Kafka client connects (shared/kafka_security.py; docs/scaling.md, "Managed Kafka and PostgreSQL").
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_ca_file: str = ""  # PEM; empty: the system's trusted authorities
    kafka_ssl_cert_file: str = ""  # a client certificate (PEM) where the brokers authenticate clients by TLS
    kafka_ssl_key_file: str = ""

    database_url: str = "postgresql+asyncpg://groundswell:groundswell@127.0.0.1:5433/groundswell"
    database_pool_size: int = 10

    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    mail_from: str = "Groundswell <hello@groundswell.localhost>"
    smtp_max_per_second: float = 0.0  # the relay's allowed rate; 0: no limit
    smtp_connections: int = 4  # concurrent SMTP connections per notifications process
    # How long a sender holds the deliveries it claimed (services/notifications/delivery.py): a killed sender's
    # emails wait this long before another sends them. Never part of what prevents a second copy (the staged
    # record's fencing does that), so any value from a few seconds up is safe; `make test` runs with 6.
    delivery_lease_seconds: float = Field(default=30.0, ge=3.0, le=3600.0)
    # How often membership looks for data downloads that waited PART_WAIT for a part (services/membership/
    # member_data.py) and emails their link: a download goes out up to this much later than PART_WAIT. `make test`
    # runs with 2, so the suite's overdue download is not waited out for up to half a minute.
    member_data_check_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)
    # The receiver of bounces that arrive later (notifications/bounces.py); port 0: not started.
    bounce_smtp_host: str = "127.0.0.1"
    bounce_smtp_port: int = 0
    bounce_suppress_after: int = 3  # hard bounces and refusals of one address before it is suppressed

    public_base_url: str = "http://localhost:8000"
    # The gateway's addresses (CIDR, comma-separated): only a connection from one of them may say who the client
    # is (X-Forwarded-For, X-Real-IP). Loopback for the local launcher; the gateway's network in docker-compose.
    trusted_proxies: str = "127.0.0.1/32,::1/128"
    # Where a service reaches the gateway itself (the organisers' home asks the other services through it); empty:
    # PUBLIC_BASE_URL.
    gateway_internal_url: str = ""
    secret_key: str = ""
    # GROUNDSWELL_DEV=1: a development machine (the launcher, the tests), where a weak SECRET_KEY is allowed.
    groundswell_dev: bool = False
    # GROUNDSWELL_TEST_FAILURES=1 (with GROUNDSWELL_DEV=1 only): `POST /_test/fail` fails on purpose, so a test can
    # prove that a failure never spills onto the next requests (tests/security/test_upstream_connections.py).
    groundswell_test_failures: bool = False

    network_name: str = "Groundswell Network"
    double_opt_in: bool = True

    log_level: str = "INFO"
    log_json: bool = True

    # Delivery machinery.
    outbox_poll_interval_s: float = 1.0
    outbox_batch_size: int = 500
    outbox_retention_hours: float = 72.0
    # Campaigns: members moved to a newly saved engagement ladder a transaction at a time (ladder_moves.py).
    ladder_move_chunk: int = 1000
    consumer_max_retries: int = 3
    consumer_retry_backoff_s: float = 0.2
    consumer_retry_backoff_max_s: float = 5.0
    consumer_retry_later_budget_s: float = 120.0

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        """Refuse settings that would connect otherwise than they say (a CA for a plaintext connection, SASL
        without a user): a service must never fall back to plaintext or anonymous access unnoticed."""
        problem = kafka_security_problem(self)
        if problem:
            raise InsecureKafkaSettings(f"{problem} See docs/scaling.md, \"Managed Kafka and PostgreSQL\".")
        return self

    @model_validator(mode="after")
    def _secret_key_is_secret(self) -> Settings:
        """Refuse to run with a key an attacker could know or guess, unless this is a development machine."""
        problem = secret_key_problem(self.secret_key)
        if problem and not self.groundswell_dev:
            raise InsecureSecretKey(
                f"SECRET_KEY {problem}. Set SECRET_KEY to a random value of at least {SECRET_KEY_MIN_LENGTH} "
                "characters (openssl rand -base64 48), the same for every service; or set GROUNDSWELL_DEV=1 "
                "on a development machine. See docs/security.md."
            )
        if not self.secret_key:
            self.secret_key = DEV_SECRET_KEY
        return self

    @property
    def service_instance(self) -> str:
        return f"{self.service_name}{'-' + self.instance if self.instance else ''}"

    @property
    def asyncpg_dsn(self) -> str:
        """The DATABASE_URL in the form asyncpg itself accepts (for LISTEN/NOTIFY), TLS parameters included."""
        return libpq_url(self.database_url)


def secret_key_problem(key: str) -> str | None:
    """Why `key` must not sign anything outside development, or None when it may."""
    if not key:
        return "is not set"
    if key.strip().lower() in KNOWN_SECRET_KEYS:
        return "is a published default"
    if len(key) < SECRET_KEY_MIN_LENGTH:
        return f"is shorter than {SECRET_KEY_MIN_LENGTH} characters"
    return None


def kafka_security_problem(settings: Settings) -> str | None:
    """What is contradictory in the Kafka security variables, or None."""
    protocol = settings.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    if sasl and not (settings.kafka_sasl_username and settings.kafka_sasl_password):
        return f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD."
    if not sasl and (settings.kafka_sasl_username or settings.kafka_sasl_password):
        return (f"KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD are set but KAFKA_SECURITY_PROTOCOL={protocol} sends no "
                "credentials: set it to SASL_SSL.")
    files = {
        "KAFKA_SSL_CA_FILE": settings.kafka_ssl_ca_file,
        "KAFKA_SSL_CERT_FILE": settings.kafka_ssl_cert_file,
        "KAFKA_SSL_KEY_FILE": settings.kafka_ssl_key_file,
    }
    tls_files = ", ".join(name for name, value in files.items() if value)
    if tls_files and not protocol.endswith("SSL"):
        return f"{tls_files} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: set SSL or SASL_SSL."
    if bool(settings.kafka_ssl_cert_file) != bool(settings.kafka_ssl_key_file):
        return "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together (a client certificate and its key)."
    return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
