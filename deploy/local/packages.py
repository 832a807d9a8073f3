"""The system packages the launcher needs (PostgreSQL, nginx): installed with apt-get when it runs as root,
else the message says which command installs them."""

from __future__ import annotations

import os
import shutil
import subprocess

from deploy.local.config import IS_ROOT, LauncherError, say


def apt_install(package: str, why: str) -> None:
    if not IS_ROOT or not shutil.which("apt-get"):
        raise LauncherError(f"{why} is missing. Install it with: sudo apt-get install -y {package}")
    say(f"{why} is missing; installing the Debian package {package} (apt-get) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, stdin=subprocess.DEVNULL)
        if subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode != 0:
            raise LauncherError(f"Could not install {package} with apt-get; install it by hand and try again.")
