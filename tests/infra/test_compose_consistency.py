"""deploy/docker-compose.yml says what the launcher says: each service gets the variables the launcher gives it (and
otherwise only variables the services read), listens where the gateway's docker configuration sends it, and the
gateway routes exactly as the launcher's. No Docker engine runs here, so the file is read and interpolated, not run."""

from __future__ import annotations

import re
from typing import Any

import pytest

from deploy.local.config import BASE_SERVICE_PORTS, SERVICES
from deploy.local.gateway import render_nginx_conf
from tests.support.deployment import (
    DEVELOPMENT_ONLY,
    DOCKERFILE,
    NOT_SETTINGS,
    compose,
    launcher_variables,
    settings_variables,
)

# What the launcher gives a service and docker-compose leaves at the setting's default, with why.
COMPOSE_DEFAULTS = {
    "INSTANCE": "one container per service: the default (no instance suffix) is right",
    "BOUNCE_SMTP_PORT": "the receiver of later bounces stays off (port 0, the default) in docker-compose",
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return compose()["services"]  # type: ignore[no-any-return]


def _locations(conf: str) -> dict[str, str]:
    """Every location of an nginx.conf and what it does (the upstream it passes to, or its return)."""
    return dict(re.findall(r"location ([^{]+?) \{\s*(proxy_pass http://\w+|return \d+)", conf))


def test_each_service_gets_the_launchers_variables_and_only_settings_besides(services: dict[str, Any]) -> None:
    settings = settings_variables()
    for name in SERVICES:
        launcher = launcher_variables(name)
        assert set(launcher) - DEVELOPMENT_ONLY - NOT_SETTINGS <= settings, f"the launcher sets what {name} ignores"
        env = services[name]["environment"]
        assert set(launcher) - DEVELOPMENT_ONLY - NOT_SETTINGS - set(COMPOSE_DEFAULTS) - set(env) == set(), name
        assert set(env) - NOT_SETTINGS <= settings, f"docker-compose gives {name} variables it does not read"
        assert DEVELOPMENT_ONLY.isdisjoint(env), "docker-compose is no development stack"
        assert env["SERVICE_NAME"] == name
        assert env["HTTP_PORT"] == str(BASE_SERVICE_PORTS[name])
        assert env["DATABASE_URL"].rsplit("/", 1)[1] == launcher["DATABASE_URL"].rsplit("/", 1)[1]
        assert env["SECRET_KEY"].startswith("<required"), "SECRET_KEY has no default in docker-compose"


def test_each_service_migrates_then_serves_on_the_launchers_port(services: dict[str, Any]) -> None:
    for name in SERVICES:
        service = services[name]
        assert service["command"][-1] == f"python -m services.{name} migrate && exec python -m services.{name}"
        port = BASE_SERVICE_PORTS[name]
        assert f"127.0.0.1:{port}:{port}" in service["ports"]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])


def test_kafka_and_the_topics_job_agree_with_the_services(services: dict[str, Any]) -> None:
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for name in [*SERVICES, "topics"]:
        assert f"PLAINTEXT://{services[name]['environment']['KAFKA_BOOTSTRAP_SERVERS']}" in advertised
    assert services["topics"]["command"] == ["python", "-m", "shared.topics", "create"]


def test_the_gateway_routes_as_the_launchers_gateway(services: dict[str, Any]) -> None:
    gateway = services["gateway"]
    assert gateway["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile", "target": "gateway"}
    dockerfile = DOCKERFILE.read_text()
    assert "python -m deploy.local.launcher nginx-conf --target docker > /tmp/nginx.conf" in dockerfile
    docker, local = render_nginx_conf("docker"), render_nginx_conf("local")
    assert _locations(docker) == _locations(local) and len(_locations(docker)) > 20
    # Its upstreams are the compose services, on the ports they listen on.
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server ([\w.-]+:\d+)", docker))
    assert upstreams == {name: f"{name}:{services[name]['environment']['HTTP_PORT']}" for name in SERVICES}
    assert re.search(r"listen 8000;", docker) and gateway["ports"] == ["127.0.0.1:8000:8000"]
    # The services believe X-Forwarded-For from the gateway's fixed address only.
    address = gateway["networks"]["default"]["ipv4_address"]
    for name in SERVICES:
        assert services[name]["environment"]["TRUSTED_PROXIES"] == f"{address}/32"
        assert services[name]["environment"]["GATEWAY_INTERNAL_URL"] == "http://gateway:8000"
