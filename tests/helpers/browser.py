"""Headless Chromium for the console's tests: Debian's `chromium` (Playwright's own browser download is
not reachable here), installed when missing and the tests run as root (as CI does); otherwise the tests
skip, saying why. Playwright drives it through `executable_path`."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def chromium_binary() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("the console's browser tests need Debian's chromium (apt-get install chromium); not root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=1200).returncode != 0:
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"], env=env, capture_output=True, timeout=900
        )
        subprocess.run(install, env=env, capture_output=True, timeout=1200)
    found = shutil.which("chromium")
    if not found:
        pytest.skip("could not install Debian's chromium for the console's browser tests")
    return found
