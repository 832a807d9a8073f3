"""The shipped alert rules and Grafana dashboard (deploy/monitoring/, docs/operations.md "Monitoring and alerts").

`promtool` (Debian's `prometheus` package, installed by `make install`) checks the rules' syntax and runs their unit
tests: each alert fires on the series that should fire it and not on the quiet ones beside them. The dashboard's
queries are checked the same way, and every metric the rules and the dashboard read is one the services export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers the services' metrics in REGISTRY)
from deploy.local import launcher

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/monitoring/prometheus/groundswell-alerts.yml"
RULE_TESTS = ROOT / "deploy/monitoring/prometheus/groundswell-alerts.test.yml"
EXAMPLE_CONFIG = ROOT / "deploy/monitoring/prometheus/prometheus.example.yml"
DASHBOARD = ROOT / "deploy/monitoring/grafana/groundswell-dashboard.json"
OPERATIONS = ROOT / "docs/operations.md"
# What the rules may read besides the services' own metrics: Prometheus' `up` and node_exporter's filesystems.
FOREIGN_METRICS = {"up", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"}
METRIC_NAME = re.compile(r"\b((?:groundswell|node)_[a-z_]+|up)\b(?=\s*[{\[)])")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make install` installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def exported_metric_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
    return names


def test_the_alert_rules_and_the_example_configuration_are_valid():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", "--syntax-only", EXAMPLE_CONFIG.name)
    assert config.returncode == 0, config.stdout + config.stderr


def test_each_alert_fires_on_its_series_and_not_on_the_quiet_ones():
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert {rule["alert"] for rule in rules()} <= tested, "every alert has a unit test"


def test_every_alert_says_what_to_do_in_the_operations_guide():
    guide = OPERATIONS.read_text()
    for rule in rules():
        name = rule["alert"]
        assert re.search(rf"^#+ .*`?{name}`?", guide, re.M), f"docs/operations.md has no section for {name}"
        assert f"docs/operations.md#{name.lower()}" in rule["annotations"]["description"], name


def test_the_dashboards_queries_are_valid_promql(tmp_path):
    substituted = [
        q.replace("$__rate_interval", "5m").replace('"$service"', '".*"') for q in dashboard_queries()
    ]
    as_rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(substituted)
    ]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(as_rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_a_grafana_dashboard_with_distinct_panels():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_metric_the_rules_and_the_dashboard_read_is_exported():
    exported = exported_metric_names() | FOREIGN_METRICS
    for query in [rule["expr"] for rule in rules()] + dashboard_queries():
        for name in METRIC_NAME.findall(query):
            assert name in exported, f"{name} (in {query!r}) is not a metric anything exports"


@pytest.mark.parametrize("service", ["membership", "events", "notifications", "campaigns"])
def test_a_running_service_reports_its_readiness_per_dependency(service):
    port = launcher.SERVICE_PORTS[service]
    body = httpx.get(f"http://{launcher.HOST}:{port}/metrics", timeout=10).text
    for dependency in ("database", "kafka"):
        assert f'groundswell_ready{{dependency="{dependency}",service="{service}"}} 1.0' in body, dependency
