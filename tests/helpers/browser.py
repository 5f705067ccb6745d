"""Headless Chromium for the console's tests: Debian's `chromium` (Playwright's own browser download is
not reachable here), which Playwright drives through `executable_path`."""

from __future__ import annotations

from .debian import debian_binary


def chromium_binary() -> str:
    return debian_binary("chromium", "chromium", "the console's browser tests")
