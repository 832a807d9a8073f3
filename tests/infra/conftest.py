"""Fixtures for the launcher's own tests: the local infrastructure, started (or reused) by the launcher.

Independent of tests/conftest.py: these tests need only Kafka, PostgreSQL and the SMTP catcher,
plus the services where a test says so.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from deploy.local import launcher


@pytest.fixture(scope="session")
def infra() -> None:
    """Kafka, PostgreSQL and the SMTP catcher up and ready (left running for the next test run)."""
    launcher.ensure_up(services=False)


@pytest.fixture(scope="session")
def full_stack() -> None:
    """Everything, including the services that have code and the gateway."""
    launcher.ensure_up(services=True)


@pytest.fixture
def catcher(infra: None) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=launcher.SMTP_CATCHER_URL, timeout=10) as client:
        yield client
