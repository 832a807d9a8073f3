"""Settings shared by every service, read from the environment (one meaning everywhere)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The environment variables of ../shared/ARCHITECTURE.md plus a few operational knobs."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    service_name: str = "groundswell"
    instance: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_replication_factor: int = 1
    kafka_partitions: int = 6

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

    public_base_url: str = "http://localhost:8000"
    secret_key: str = Field(default="dev-insecure-secret-key-change-me", min_length=16)

    network_name: str = "Groundswell Network"
    double_opt_in: bool = True

    log_level: str = "INFO"
    log_json: bool = True

    # Delivery machinery.
    outbox_poll_interval_s: float = 1.0
    outbox_batch_size: int = 500
    outbox_retention_hours: float = 72.0
    consumer_max_retries: int = 3
    consumer_retry_backoff_s: float = 0.2
    consumer_retry_backoff_max_s: float = 5.0
    consumer_retry_later_budget_s: float = 120.0

    @property
    def service_instance(self) -> str:
        return f"{self.service_name}{'-' + self.instance if self.instance else ''}"

    @property
    def asyncpg_dsn(self) -> str:
        """The DATABASE_URL in the form asyncpg itself accepts (for LISTEN/NOTIFY)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@lru_cache
def get_settings() -> Settings:
    return Settings()
