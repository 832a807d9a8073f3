"""The Helm chart (deploy/helm/groundswell): `helm lint` and `helm template` with each example values file, every
rendered object checked against the Kubernetes API types offline (deploy/helm/tools/validate), and the chart
agreeing with the launcher: the same variables for each service, the gateway's configuration rendered by the
launcher's render_nginx_conf, probes on paths the running services answer. No cluster: helm and the validator are
built from the Go module proxy at pinned versions (deploy/helm/tools/build.sh, started early by `make test`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.config import BASE_SERVICE_PORTS, HOST, SERVICE_PORTS, SERVICES
from deploy.local.gateway import render_nginx_conf
from tests.support.deployment import (
    CHART,
    DEVELOPMENT_ONLY,
    HELM_TOOLS_SOURCE,
    NOT_SETTINGS,
    by_kind,
    documents,
    helm,
    helm_tools,
    launcher_variables,
    settings_variables,
    validate,
)

RELEASE = "act"
FULLNAME = "act-groundswell"
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
EXTERNAL_SECRETS = ["groundswell-secret-key", "groundswell-database", "groundswell-smtp", "groundswell-backup-key",
                    f"{FULLNAME}-pg-app"]  # fmt: skip  (the last one CloudNativePG writes)
EXTERNAL_CLAIMS = ["groundswell-backups"]
KUBE_VERSION = "1.33.0"
# What the chart gives a service and the launcher does not, each a setting: where the gateway is, whom to believe
# about the client's address, topic and group settings the launcher leaves at their defaults, and the bounce
# receiver's address (the launcher's default, loopback, is no use in a pod).
CHART_ONLY = {"TRUSTED_PROXIES", "GATEWAY_INTERNAL_URL", "KAFKA_REPLICATION_FACTOR", "KAFKA_PARTITIONS",
              "KAFKA_MIN_INSYNC_REPLICAS", "KAFKA_SESSION_TIMEOUT_MS", "KAFKA_HEARTBEAT_INTERVAL_MS",
              "BOUNCE_SMTP_HOST", "BOUNCE_SUPPRESS_AFTER", "NETWORK_NAME", "LOG_LEVEL"}  # fmt: skip


@pytest.fixture(scope="module")
def tools() -> Path:
    return helm_tools()


def _template(values: Path, *extra: str) -> str:
    rendered = helm("template", RELEASE, str(CHART), "--values", str(values), "--kube-version", KUBE_VERSION, *extra)
    assert rendered.returncode == 0, rendered.stderr
    return rendered.stdout


@pytest.fixture(scope="module")
def managed(tools: Path) -> list[dict[str, Any]]:
    return documents(_template(CHART / "ci" / "managed-values.yaml"))


@pytest.fixture(scope="module")
def operators(tools: Path) -> list[dict[str, Any]]:
    return documents(_template(CHART / "ci" / "operators-values.yaml"))


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name)
def test_helm_lint_passes_strictly(tools: Path, values: Path) -> None:
    linted = helm("lint", str(CHART), "--strict", "--values", str(values), "--kube-version", KUBE_VERSION)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 chart(s) failed" in linted.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name)
def test_every_rendered_object_is_a_valid_kubernetes_object(tools: Path, values: Path) -> None:
    checked = validate(
        _template(values),
        *[f"-external-secret={s}" for s in EXTERNAL_SECRETS],
        *[f"-external-claim={c}" for c in EXTERNAL_CLAIMS],
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kinds = {line.split()[1] for line in checked.stdout.splitlines()}
    assert {"apps/v1/Deployment", "v1/Service", "autoscaling/v2/HorizontalPodAutoscaler", "batch/v1/Job",
            "policy/v1/PodDisruptionBudget", "batch/v1/CronJob", "v1/ConfigMap"} <= kinds  # fmt: skip


def test_the_validator_refuses_a_misspelt_field_an_unknown_kind_and_a_dangling_reference(tools: Path) -> None:
    """It can fail: what the chart's own rendering must not contain is refused, each with a reason."""
    deployment = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replica: 2\n"
        "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
        "    spec: {containers: [{name: web, image: nginx}]}\n"
    )
    misspelt = validate(deployment)
    assert misspelt.returncode == 1
    assert 'unknown field "replica"' in misspelt.stdout

    unknown = validate("apiVersion: example.org/v1\nkind: Widget\nmetadata: {name: w}\nspec: {}\n")
    assert unknown.returncode == 1 and "a kind this validator does not know" in unknown.stdout

    dangling = validate(
        deployment.replace("replica:", "replicas:")
        + "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: other}\n"
        "spec: {maxUnavailable: 1, selector: {matchLabels: {app: other}}}\n"
    )
    assert dangling.returncode == 1 and 'PodDisruptionBudget "other" selects no rendered Deployment' in dangling.stdout


def test_a_missing_secret_name_stops_the_render_with_what_to_set(tools: Path) -> None:
    values = "smtp.host=smtp.example.org,database.host=db,database.passwordSecret.name=db,kafka.bootstrapServers=k:9092"
    rendered = helm("template", RELEASE, str(CHART), "--set", values, "--set", "backup.keySecret.name=bk")
    assert rendered.returncode != 0
    assert "secretKey.existingSecret" in rendered.stderr


def test_each_service_is_a_deployment_with_probes_migrations_autoscaling_and_a_disruption_budget(
    managed: list[dict[str, Any]],
) -> None:
    deployments = by_kind(managed, "Deployment")
    autoscalers = by_kind(managed, "HorizontalPodAutoscaler")
    budgets = by_kind(managed, "PodDisruptionBudget")
    services = by_kind(managed, "Service")
    for name in SERVICES:
        pod = deployments[f"{FULLNAME}-{name}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert container["ports"][0] == {"name": "http", "containerPort": BASE_SERVICE_PORTS[name]}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        (migrate,) = pod["initContainers"]
        assert migrate["command"] == ["python", "-m", f"services.{name}", "migrate"]
        assert _env(migrate) == _env(container)
        assert autoscalers[f"{FULLNAME}-{name}"]["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-{name}"
        assert autoscalers[f"{FULLNAME}-{name}"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert budgets[f"{FULLNAME}-{name}"]["spec"]["maxUnavailable"] == 1
        assert services[f"{FULLNAME}-{name}"]["spec"]["ports"][0]["port"] == BASE_SERVICE_PORTS[name]


def test_the_probes_ask_paths_the_running_services_answer(managed: list[dict[str, Any]], full_stack: None) -> None:
    for name in SERVICES:
        (container,) = by_kind(managed, "Deployment")[f"{FULLNAME}-{name}"]["spec"]["template"]["spec"]["containers"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            path = container[probe]["httpGet"]["path"]
            answer = httpx.get(f"http://{HOST}:{SERVICE_PORTS[name]}{path}", timeout=10)
            assert answer.status_code == 200, f"{name} {probe} {path}: {answer.status_code}"


def test_each_service_gets_the_launchers_variables_and_only_settings_besides(managed: list[dict[str, Any]]) -> None:
    settings = settings_variables()
    for name in SERVICES:
        (container,) = by_kind(managed, "Deployment")[f"{FULLNAME}-{name}"]["spec"]["template"]["spec"]["containers"]
        chart = set(_env(container))
        launcher = set(launcher_variables(name)) - DEVELOPMENT_ONLY
        assert launcher - chart == set(), f"{name}: the chart does not set what the launcher sets"
        assert chart - launcher <= CHART_ONLY | NOT_SETTINGS, f"{name}: variables no service reads"
        assert (chart - NOT_SETTINGS) <= settings, f"{name}: variables no service reads"


def test_secrets_come_from_existing_secrets_never_from_values(managed: list[dict[str, Any]]) -> None:
    assert by_kind(managed, "Secret") == {}
    (container,) = by_kind(managed, "Deployment")[f"{FULLNAME}-membership"]["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert env["SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "groundswell-secret-key", "key": "SECRET_KEY"}
    assert env["SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "groundswell-smtp", "key": "password"}
    password = env["GROUNDSWELL_DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "groundswell-database", "key": "password"}
    names = list(env)
    assert names.index("GROUNDSWELL_DATABASE_PASSWORD") < names.index("DATABASE_URL")  # defined first: expanded
    assert env["DATABASE_URL"]["value"] == (
        "postgresql+asyncpg://groundswell:$(GROUNDSWELL_DATABASE_PASSWORD)@groundswell-db.example.cloud:5432"
        "/groundswell_membership?ssl=require"
    )
    assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"].count(",") == 2


def test_the_gateway_runs_the_configuration_the_launcher_renders(managed: list[dict[str, Any]]) -> None:
    expected = render_nginx_conf("docker")
    shipped = (CHART / "files" / "nginx.conf").read_text()
    assert shipped == expected, (
        "deploy/helm/groundswell/files/nginx.conf is out of date: "
        "python -m deploy.local.launcher nginx-conf --target docker > deploy/helm/groundswell/files/nginx.conf"
    )
    conf = by_kind(managed, "ConfigMap")[f"{FULLNAME}-gateway"]["data"]["nginx.conf"]
    for name, port in BASE_SERVICE_PORTS.items():
        expected = expected.replace(f" server {name}:{port} ", f" server {FULLNAME}-{name}:{port} ")
    assert conf.rstrip("\n") == expected.rstrip("\n")
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server ([\w.-]+):\d+", conf))
    services = by_kind(managed, "Service")
    assert upstreams.keys() == set(SERVICES)
    for name, host in upstreams.items():
        assert host in services and services[host]["spec"]["selector"]["app.kubernetes.io/component"] == name
    pod = by_kind(managed, "Deployment")[f"{FULLNAME}-gateway"]["spec"]["template"]
    assert pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/_gateway/healthz"
    assert pod["metadata"]["annotations"]["checksum/nginx-conf"]  # a new configuration rolls the gateway's pods


def test_topics_are_created_by_a_job_after_each_install_and_upgrade(managed: list[dict[str, Any]]) -> None:
    job = by_kind(managed, "Job")[f"{FULLNAME}-topics"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "shared.topics", "create"]
    env = _env(container)
    assert env["KAFKA_REPLICATION_FACTOR"]["value"] == "3"
    assert env["KAFKA_MIN_INSYNC_REPLICAS"]["value"] == "2"


def test_backups_run_nightly_into_a_claim_sealed_with_the_key_from_a_secret(managed: list[dict[str, Any]]) -> None:
    cron = by_kind(managed, "CronJob")[f"{FULLNAME}-backup"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "deploy.local.backup", "create"]
    env = {name: e.get("value") for name, e in _env(container).items()}
    assert env["BACKUP_KEEP"] == "7" and env["GROUNDSWELL_BACKUP_DIR"] == "/backups"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["backup-key"]["secret"]["secretName"] == "groundswell-backup-key"
    assert env["BACKUP_KEY_FILE"] == f"{mounts['backup-key']}/backup.key"
    claim = volumes["backups"]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(managed, "PersistentVolumeClaim") and mounts["backups"] == "/backups"


def test_the_operators_values_make_a_strimzi_kafka_and_a_cloudnativepg_cluster_the_services_use(
    operators: list[dict[str, Any]],
) -> None:
    (kafka,) = by_kind(operators, "Kafka").values()
    (pool,) = by_kind(operators, "KafkaNodePool").values()
    (cluster,) = by_kind(operators, "Cluster").values()
    assert pool["spec"]["replicas"] == 3
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    databases = [cluster["spec"]["bootstrap"]["initdb"]["database"]] + [
        re.search(r"DATABASE (\w+)", sql).group(1)  # type: ignore[union-attr]
        for sql in cluster["spec"]["bootstrap"]["initdb"]["postInitSQL"]
    ]
    assert sorted(databases) == sorted(f"groundswell_{name}" for name in SERVICES)
    (container,) = by_kind(operators, "Deployment")[f"{FULLNAME}-events"]["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"] == f"{kafka['metadata']['name']}-kafka-bootstrap:9092"
    assert f"@{cluster['metadata']['name']}-rw:5432/groundswell_events" in env["DATABASE_URL"]["value"]
    password = env["GROUNDSWELL_DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["name"] == f"{cluster['metadata']['name']}-app"
    assert f"{FULLNAME}-membership" not in by_kind(operators, "HorizontalPodAutoscaler")


def test_the_tools_are_pinned_with_checksums() -> None:
    """helm and the Kubernetes modules at fixed versions, each with its go.sum checksum; the build refuses others."""
    mod = (HELM_TOOLS_SOURCE / "go.mod").read_text()
    sums = (HELM_TOOLS_SOURCE / "go.sum").read_text()
    for module in ("helm.sh/helm/v3", "k8s.io/api", "k8s.io/apimachinery", "sigs.k8s.io/yaml"):
        version = re.search(rf"^\s*{re.escape(module)} (v\S+)", mod, re.M)
        assert version, f"{module} is not required at a fixed version"
        assert re.search(rf"^{re.escape(module)} {version.group(1)} h1:\S+=$", sums, re.M), f"no checksum for {module}"
    assert "-mod=readonly" in (HELM_TOOLS_SOURCE / "build.sh").read_text()


def test_a_restore_job_restores_the_chosen_backup_with_the_same_key_and_claim(
    tools: Path, managed: list[dict[str, Any]]
) -> None:
    restore_from = ("--set", "backup.restoreFrom=20261207T031500Z", "--show-only", "templates/restore-job.yaml")
    rendered = _template(CHART / "ci" / "managed-values.yaml", *restore_from)
    secrets = [f"-external-secret={s}" for s in EXTERNAL_SECRETS]
    checked = validate(rendered, *secrets, f"-external-claim={FULLNAME}-backups")
    assert checked.returncode == 0, checked.stdout
    (job,) = documents(rendered)
    restore = job["spec"]["template"]["spec"]
    assert restore["containers"][0]["command"] == [
        "python", "-m", "deploy.local.backup", "restore", "/backups/20261207T031500Z"
    ]  # fmt: skip
    backup = by_kind(managed, "CronJob")[f"{FULLNAME}-backup"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert restore["volumes"] == backup["volumes"]
    assert restore["containers"][0]["env"] == backup["containers"][0]["env"]
    assert "restore" not in {d["metadata"]["name"].rsplit("-", 1)[1] for d in managed}  # only when asked for
