"""Organiser accounts on the running system, made the way an operator and an organiser make them: the command line
prints the TOTP secret and the set-password link, the organiser sets a password through the gateway."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp

from deploy.local import launcher

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Account:
    organiser_id: str
    email: str
    password: str
    totp_secret: str
    recovery_codes: tuple[str, ...] = ()

    def next_code(self) -> str:
        """The code of the next time step: accepted (one step of drift) and never one already used."""
        return pyotp.TOTP(self.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))


async def membership_cli(*args: str) -> str:
    """`python -m services.membership …` against the running system's membership database."""
    return await service_cli("membership", *args)


async def service_cli(service: str, *args: str) -> str:
    """`python -m services.<service> …` against the running system's database of that service."""
    env = {
        **os.environ,
        "GROUNDSWELL_DEV": "1",
        "DATABASE_URL": launcher.database_url(service),
        "SECRET_KEY": launcher.secret_key(),
        "PUBLIC_BASE_URL": launcher.GATEWAY_URL,
        "KAFKA_BOOTSTRAP_SERVERS": launcher.KAFKA_BOOTSTRAP,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"services.{service}", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


def _field(output: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}:\s+(\S+)$", output, re.M)
    assert match, output
    return match.group(1)


async def active_account(
    gateway: httpx.AsyncClient, scope: str = "network", name: str = "", scope_id: str | None = None
) -> Account:
    """A new organiser account with its password set (through the gateway), ready to sign in."""
    email = f"organiser-{uuid.uuid4().hex[:12]}@example.org"
    args = ["create-organiser", "--email", email, "--scope", scope]
    args += (["--name", name] if name else []) + (["--scope-id", scope_id] if scope_id else [])
    output = await membership_cli(*args)
    secret, link = _field(output, "TOTP secret"), _field(output, "set password link")
    token = parse_qs(urlsplit(link).query)["token"][0]
    done = await gateway.post(
        "/organisers/set-password",
        data={"token": token, "password": PASSWORD, "confirm": PASSWORD, "code": pyotp.TOTP(secret).now()},
    )
    assert done.status_code == 200, done.text
    codes = tuple(re.findall(r"<code>([0-9a-f]{5}-[0-9a-f]{5})</code>", done.text))
    return Account(_field(output, "organiser id"), email, PASSWORD, secret, codes)
