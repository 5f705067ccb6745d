"""Programs the tests run that come from Debian's packages (etcd, chromium): found on the PATH, or
installed with apt-get when missing and the tests run as root (as CI does); otherwise the test skips,
saying why."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def debian_binary(command: str, package: str, needed_by: str) -> str:
    """The path of `command`, installing Debian's `package` first where that is possible."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{needed_by} need {command} (Debian: apt-get install {package}); not root, so not installed")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", package]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:  # the package lists may be missing on a fresh machine
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"], env=env, capture_output=True, timeout=900
        )
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    found = shutil.which(command)
    if not found:
        pytest.skip(f"could not install {package}: {result.stderr.strip()[-300:]}")
    return found
