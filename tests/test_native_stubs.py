"""The .pyi stubs of the compiled modules say what the modules export, with their real signatures:
mypy's stubtest compares each stub with the imported module (a parameter renamed or added in a .pyx
without its stub fails here)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

MODULES = [
    "tidelog._native.batch_scan",
    "tidelog._native.checksum",
    "tidelog._native.partition_hash",
    "tidelog._native.record_batch",
]


def test_the_native_stubs_match_the_compiled_modules():
    allowlist = pathlib.Path(__file__).with_name("stubtest_allowlist.txt")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *MODULES, "--allowlist", str(allowlist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
