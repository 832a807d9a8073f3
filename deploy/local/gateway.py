"""The gateway: nginx in front of the services, its nginx.conf rendered from ROUTES (below) and
deploy/nginx/gateway.conf.template, for the launcher ("local") and for the Docker image ("docker")."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.local.config import (
    BASE_SERVICE_PORTS,
    GATEWAY,
    GATEWAY_ACME_WEBROOT,
    GATEWAY_HTTPS_PORT,
    GATEWAY_PORT,
    GATEWAY_TLS,
    GATEWAY_TLS_CERT,
    GATEWAY_TLS_KEY,
    GATEWAY_URL,
    HOST,
    IS_ROOT,
    NGINX_DIR,
    NGINX_TEMPLATE,
    PUBLIC_BASE_URL,
    SERVICE_PORTS,
    LauncherError,
    required_ports,
    start_timeout,
)
from deploy.local.packages import apt_install
from deploy.local.probes import check_ports, not_ready, wait_http, wait_until
from deploy.local.processes import ManagedProcess, launcher_lock, read_record, spawn, stop_process
from deploy.local.services import instance_ports

# --------------------------------------------------------------------------------------------------
# The gateway's routing table: path -> owning service. The one place it is written down.
#   "/x"  routes /x exactly and everything under /x/ ;   "/x/" routes everything under /x/ ;
#   "/"   is the catch-all (home page, anything unrouted: membership renders the 404).
# nginx picks the longest matching prefix, so /api/v2/events beats /api/v2.
# --------------------------------------------------------------------------------------------------
ROUTES: dict[str, str] = {
    "/": "membership",
    # membership: people, consent (preferences, unsubscribe), organiser accounts, OSDI entry point
    "/join": "membership",
    "/members": "membership",
    "/me": "membership",
    "/organisers": "membership",
    "/signin": "membership",
    "/admin": "membership",
    "/preferences": "membership",
    "/unsubscribe": "membership",
    "/api/v2": "membership",
    "/api/v2/people": "membership",
    "/api/v2/tags": "membership",
    "/api/v2/person_signup_helper": "membership",
    "/static/membership/": "membership",
    # events: meetings, conferences, RSVPs, calendars
    "/events": "events",
    "/meetings": "events",
    "/calendar": "events",
    "/api/v2/events": "events",
    "/static/events/": "events",
    # notifications: delivery, digests and their feeds
    "/notifications": "notifications",
    "/feeds": "notifications",
    "/api/v2/messages": "notifications",
    "/static/notifications/": "notifications",
    # campaigns: asks, actions, the organisers' dashboard
    "/campaigns": "campaigns",
    "/dashboard": "campaigns",
    "/api/v2/petitions": "campaigns",
    "/static/campaigns/": "campaigns",
}
# A person's attendances and signatures lie under membership's /api/v2/people/ but are events' and campaigns'
# (Action Network's paths): regular expressions matched inside the prefix they lie under, before its owner.
NESTED_ROUTES: dict[str, dict[str, str]] = {
    "/api/v2/people": {
        r"^/api/v2/people/[^/]+/attendances(/|$)": "events",
        r"^/api/v2/people/[^/]+/signatures(/|$)": "campaigns",
    },
}
# Not public: the gateway answers 404 for these (same matching as ROUTES); they stay on each service's own
# port (health, metrics, the OpenAPI documents), for operators and monitoring inside the network.
HIDDEN: tuple[str, ...] = ("/_svc/", "/docs", "/redoc", "/openapi.json", "/metrics")
# /_gateway/healthz answers from nginx itself.

# Passive health checks when a service runs several instances: an instance that fails a connection (refused, reset,
# timed out) or answers 502 is left out for FAIL_TIMEOUT_S, then tried again with one request. nginx ignores both
# for a service with one instance (it is never left out: there is nowhere else to go).
MAX_FAILS = 1
FAIL_TIMEOUT_S = 5

# Idle upstream connections are closed by nginx before uvicorn closes them (its timeout_keep_alive is 5 s).
UPSTREAM_KEEPALIVE_S = 4

# Sent with every answer of the gateway. Scripts and styles only from this site ('unsafe-inline' styles: a few
# pages carry a style attribute); no framing by other sites; forms may post anywhere (the embeddable join form
# comes back to the other site's thank-you page).
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "$groundswell_hsts",  # empty, so not sent, unless the public address is https
}


@dataclass(frozen=True)
class Tls:
    """HTTPS at the gateway: the certificate chain and key files, the port it serves on, where it redirects plain
    HTTP to (the public address), and ACME's webroot for http-01 challenges (certbot --webroot), if any."""

    certificate: str
    key: str
    port: int
    public_base_url: str
    acme_webroot: str = ""


def configured_tls() -> Tls | None:
    """The TLS the environment asks for (GATEWAY_TLS_CERT and GATEWAY_TLS_KEY), or None: plain HTTP."""
    if not GATEWAY_TLS:
        return None
    for name, path in (("GATEWAY_TLS_CERT", GATEWAY_TLS_CERT), ("GATEWAY_TLS_KEY", GATEWAY_TLS_KEY)):
        if not Path(path).is_file():
            raise LauncherError(f"{name}={path}: no such file. Give the certificate chain and its private key (PEM).")
    if not PUBLIC_BASE_URL.startswith("https://"):
        raise LauncherError(f"PUBLIC_BASE_URL={PUBLIC_BASE_URL} with TLS at the gateway: use its https:// address.")
    return Tls(GATEWAY_TLS_CERT, GATEWAY_TLS_KEY, GATEWAY_HTTPS_PORT, PUBLIC_BASE_URL, GATEWAY_ACME_WEBROOT)


def _tls_listen(listen_host: str, tls: Tls) -> str:
    return "\n".join(
        [
            f"        listen {listen_host}{tls.port} ssl;",
            f"        ssl_certificate {tls.certificate};",
            f"        ssl_certificate_key {tls.key};",
            "        ssl_protocols TLSv1.2 TLSv1.3;",
            "        ssl_prefer_server_ciphers off;",
            "        ssl_session_cache shared:groundswell_tls:10m;",
            "        ssl_session_timeout 1d;",
        ]
    )


def _redirect_server(listen: str, tls: Tls) -> str:
    """Plain HTTP: the gateway's health answer, ACME's challenges, and a permanent redirect to https for the rest."""
    acme = (
        f"        location ^~ /.well-known/acme-challenge/ {{\n            root {tls.acme_webroot};\n        }}\n"
        if tls.acme_webroot
        else ""
    )
    target = tls.public_base_url.rstrip("/")
    return (
        "    server {\n"
        f"        listen {listen};\n"
        "        server_name _;\n"
        "        location = /_gateway/healthz {\n            access_log off;\n            default_type text/plain;\n"
        '            return 200 "ok upstreams=@@UPSTREAMS_DIGEST@@\\n";\n        }\n'
        f"{acme}"
        f"        location / {{\n            return 308 {target}$request_uri;\n        }}\n"
        "    }\n"
    )


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def check_tools() -> None:
    """nginx, installed with apt-get as root."""
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        apt_install("nginx-light", "nginx (the gateway)")


def _location_blocks() -> str:
    blocks: list[str] = []

    def location(path: str, body: str, inner: str = "") -> None:
        matches = ["/"] if path == "/" else [f"^~ {path}"] if path.endswith("/") else [f"= {path}", f"^~ {path}/"]
        for match in matches:
            nested = "" if match[0] == "=" else inner  # an exact location holds no other
            blocks.append(f"        location {match} {{\n            {body}{nested}\n        }}")

    for path, service in sorted(ROUTES.items(), key=lambda item: (item[0] != "/", item[0])):
        inner = "".join(
            f"\n            location ~ {pattern} {{ proxy_pass http://{owner}; }}"
            for pattern, owner in NESTED_ROUTES.get(path, {}).items()
        )
        location(path, f"proxy_pass http://{service};", inner)
    for path in HIDDEN:
        location(path, "return 404;")
    return "\n".join(blocks)


def _security_headers(indent: str) -> str:
    return "\n".join(f'{indent}add_header {name} "{value}" always;' for name, value in SECURITY_HEADERS.items())


def render_nginx_conf(
    target: str = "local", *, tls: Tls | None = None, directory: Path = NGINX_DIR, port: int = GATEWAY_PORT
) -> str:
    """The gateway's nginx.conf from deploy/nginx/gateway.conf.template and ROUTES.

    target "local": 127.0.0.1 ports, paths inside `directory` (.run/nginx); "docker": service names of
    docker-compose. With `tls`, the routes are served over HTTPS and the plain `port` redirects there.
    """
    listen_host = ""
    if target == "local":  # every running instance of each service (the launcher records their ports)
        hosts = {name: [f"{HOST}:{p}" for p in instance_ports(name)] for name in SERVICE_PORTS}
        listen_host = f"{HOST}:"
        values = {
            "USER_DIRECTIVE": "user root;" if IS_ROOT else "# (not root: workers run as the launching user)",
            "WORKER_PROCESSES": "2",
            "PID_FILE": str(directory / "nginx.pid"),
            "ERROR_LOG": "stderr",
            "ACCESS_LOG": "/dev/stdout",
            "TEMP_DIR": str(directory / "tmp"),
            "LISTEN": f"{HOST}:{port}",
        }
    elif target == "docker":
        hosts = {name: [f"{name}:{port}"] for name, port in BASE_SERVICE_PORTS.items()}
        values = {
            "USER_DIRECTIVE": "user nginx;",
            "WORKER_PROCESSES": "auto",
            "PID_FILE": "/var/run/nginx.pid",
            "ERROR_LOG": "/dev/stderr",
            "ACCESS_LOG": "/dev/stdout",
            "TEMP_DIR": "/var/cache/nginx",
            "LISTEN": "8000",
        }
    else:
        raise ValueError(f"unknown target {target!r} (local or docker)")
    if tls is None:
        values["LISTEN_DIRECTIVES"] = f"        listen {values['LISTEN']};"
        values["REDIRECT_SERVER"] = ""
    else:
        values["LISTEN_DIRECTIVES"] = _tls_listen(listen_host, tls)
        values["REDIRECT_SERVER"] = _redirect_server(values["LISTEN"], tls)
    del values["LISTEN"]
    values["UPSTREAMS"] = "\n".join(
        f"    upstream {name} {{\n"
        + "".join(f"        server {host} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT_S}s;\n" for host in servers)
        + f"        keepalive 16;\n        keepalive_timeout {UPSTREAM_KEEPALIVE_S}s;\n    }}"
        for name, servers in hosts.items()
    )
    values["UPSTREAMS_DIGEST"] = hashlib.sha256(values["UPSTREAMS"].encode()).hexdigest()[:16]
    values["ROUTES"] = _location_blocks()
    values["SECURITY_HEADERS"] = _security_headers(" " * 8)
    values["SECURITY_HEADERS_IN_LOCATION"] = _security_headers(" " * 12)
    text = NGINX_TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    leftover = re.findall(r"@@[A-Z_]+@@", text)
    if leftover:
        raise LauncherError(f"{NGINX_TEMPLATE} has placeholders the launcher does not know: {leftover}")
    return text


def _prepare_gateway() -> list[str]:
    (NGINX_DIR / "tmp").mkdir(parents=True, exist_ok=True)
    (NGINX_DIR / "nginx.conf").write_text(render_nginx_conf("local", tls=configured_tls()))
    command = _nginx_command()
    test = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if test.returncode != 0:
        raise LauncherError(f"nginx rejects the generated {NGINX_DIR / 'nginx.conf'}:\n{test.stderr}")
    return [*command, "-g", "daemon off;"]


def _nginx_command() -> list[str]:
    return [nginx_binary(), "-p", str(NGINX_DIR), "-c", str(NGINX_DIR / "nginx.conf"), "-e", "stderr"]


def reload_gateway() -> bool:
    """Render nginx.conf again from the instances running now and have the running gateway load it (nginx's
    graceful reload: requests in flight finish on the old workers). False if no gateway runs or nothing changed."""
    with launcher_lock():
        if read_record(GATEWAY) is None:
            return False
        conf = NGINX_DIR / "nginx.conf"
        before = conf.read_text() if conf.exists() else ""
        command = _prepare_gateway()[:-2]
        if conf.read_text() == before:
            return False
        reload = subprocess.run([*command, "-s", "reload"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if reload.returncode != 0:
            raise LauncherError(f"nginx did not reload {conf}:\n{reload.stderr}")
        # `nginx -s reload` only signals the master; on a busy machine the old workers answer for a while longer.
        # Done when a fresh connection is answered by a worker with the new upstreams.
        digest = re.search(r"upstreams=([0-9a-f]+)", conf.read_text())
        if digest and not _wait_for_healthz_text(f"upstreams={digest.group(1)}", RELOAD_TIMEOUT_S):
            raise LauncherError(f"nginx did not load the new {conf} within {RELOAD_TIMEOUT_S} s")
        return True


RELOAD_TIMEOUT_S = 30.0


def _wait_for_healthz_text(text: str, timeout: float) -> bool:
    def answers_with_text() -> bool:
        request = urllib.request.Request(f"{GATEWAY_URL}/_gateway/healthz", headers={"Connection": "close"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (the local gateway)
                return text in answer.read().decode(errors="replace")
        except OSError:
            return False

    return wait_until(answers_with_text, timeout, interval=0.1)


def spawn_gateway() -> ManagedProcess:
    return spawn(GATEWAY, "gateway", _prepare_gateway(), port=GATEWAY_PORT)


def gateway_ready(timeout: float = 0.0, process: ManagedProcess | None = None) -> bool:
    return wait_http(f"{GATEWAY_URL}/_gateway/healthz", timeout, process=process)


def start_gateway(timeout: float | None = None) -> ManagedProcess:
    with launcher_lock():
        record = read_record(GATEWAY)
        if record is not None:
            return ManagedProcess(record)
        check_tools()
        check_ports(required_ports([GATEWAY]))
        process = spawn_gateway()
        timeout = timeout or start_timeout("gateway")
        if not gateway_ready(timeout, process):
            stop_process(GATEWAY)
            raise not_ready(GATEWAY, process, timeout, f"{GATEWAY_URL}/_gateway/healthz")
        return process


def stop_gateway() -> bool:
    return stop_process(GATEWAY)
