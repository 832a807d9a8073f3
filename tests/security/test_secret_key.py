"""SECRET_KEY signs every session, API key and emailed link: a service refuses to start with one an attacker
could know or guess (missing, short, a published default) unless GROUNDSWELL_DEV says this is a development
machine (the launcher and the suite say so; the launcher's own key is random and long)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from deploy.local import launcher
from shared.config import DEV_SECRET_KEY, Settings

STRONG = "k" * 20 + "7Yq2-vX9pLm4Rt8Wz3Nb"

WEAK = {
    "missing": "",
    "short": "a-key-of-thirty-one-characters!",
    "the old default": DEV_SECRET_KEY,
    "docker's old trial key": "insecure-docker-trial-secret-change-me",
}


@pytest.mark.parametrize("key", WEAK.values(), ids=WEAK.keys())
def test_settings_refuse_a_weak_key_outside_development(key: str) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(secret_key=key, groundswell_dev=False)


@pytest.mark.parametrize("key", WEAK.values(), ids=WEAK.keys())
def test_a_development_machine_may_use_a_weak_key(key: str) -> None:
    assert Settings(secret_key=key, groundswell_dev=True).secret_key == (key or DEV_SECRET_KEY)


def test_a_long_random_key_is_accepted_and_the_launchers_is_one() -> None:
    assert Settings(secret_key=STRONG, groundswell_dev=False).secret_key == STRONG
    assert Settings(secret_key=launcher.secret_key(), groundswell_dev=False)


@pytest.mark.parametrize("key", ["", DEV_SECRET_KEY], ids=["missing", "the old default"])
def test_a_service_process_will_not_start_with_a_weak_key(key: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "GROUNDSWELL_DEV")}
    env.update(SECRET_KEY=key, HTTP_PORT="1")  # port 1: were it to start, it could not listen anyway
    done = subprocess.run([sys.executable, "-m", "services.membership", "serve"], env=env, cwd=launcher.REPO_ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "SECRET_KEY" in done.stderr and "openssl rand" in done.stderr
