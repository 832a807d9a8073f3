"""The ways Groundswell is deployed, read statically: the launcher's environment for a service (the reference),
docker-compose's (interpolated as `docker compose config` would), and the Helm chart's rendered manifests. The
tests compare them with each other and with what the services read (shared/config.py Settings)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from deploy.local.config import CACHE_DIR, REPO_ROOT
from deploy.local.services import service_env
from shared.config import Settings

COMPOSE_FILE = REPO_ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
CHART = REPO_ROOT / "deploy" / "helm" / "groundswell"
HELM_TOOLS_SOURCE = REPO_ROOT / "deploy" / "helm" / "tools"
HELM_TOOLS = CACHE_DIR / "helm-tools"
# The Helm tools take minutes to build from cold on two busy cores; `make test` starts the build before the suite.
HELM_TOOLS_BUILD_TIMEOUT_S = 1500

# Variables a container gets that are no setting of the services: Python's, and the database password the chart
# expands into DATABASE_URL ($(GROUNDSWELL_DATABASE_PASSWORD)).
NOT_SETTINGS = {"PYTHONUNBUFFERED", "GROUNDSWELL_DATABASE_PASSWORD"}
# What the launcher sets only because it runs a development stack: never in a deployment.
DEVELOPMENT_ONLY = {"GROUNDSWELL_DEV", "GROUNDSWELL_TEST_FAILURES"}


def settings_variables() -> set[str]:
    """Every environment variable a service reads from its settings."""
    return {name.upper() for name in Settings.model_fields}


def launcher_variables(service: str) -> dict[str, str]:
    """The variables the launcher itself gives `service` (none inherited from this process's environment)."""
    with mock.patch.dict(os.environ, {}, clear=True):
        return service_env(service)


def _interpolate(text: str) -> str:
    """docker compose's ${NAME:-default} and ${NAME:?message}, as if nothing were set (a required one: a marker)."""

    def value(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        return rest if operator == ":-" else f"<required {name}>" if operator == ":?" else ""

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", value, text)


def compose() -> dict[str, Any]:
    """deploy/docker-compose.yml with its anchors merged and its variables interpolated."""
    loaded: dict[str, Any] = yaml.safe_load(_interpolate(COMPOSE_FILE.read_text()))
    return loaded


def helm_tools() -> Path:
    """The built helm and validate (deploy/helm/tools/build.sh): waits for the build `make test` started, or builds."""
    build = subprocess.run(
        ["bash", str(HELM_TOOLS_SOURCE / "build.sh"), str(HELM_TOOLS)],
        capture_output=True,
        text=True,
        timeout=HELM_TOOLS_BUILD_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert build.returncode == 0, f"building helm and validate failed:\n{build.stdout}\n{build.stderr}"
    return HELM_TOOLS


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM_TOOLS / "helm"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HELM_CACHE_HOME": str(HELM_TOOLS / "home"), "HELM_CONFIG_HOME": str(HELM_TOOLS / "home"),
             "HELM_DATA_HOME": str(HELM_TOOLS / "home")},  # fmt: skip
    )


def validate(manifests: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM_TOOLS / "validate"), *args], input=manifests, capture_output=True, text=True, timeout=120
    )


def documents(manifests: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifests) if d]


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests if d["kind"] == kind}
