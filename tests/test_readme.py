"""The README's examples run as pasted, and the README points at nothing outside the repository.

The setup is what the README itself states: a broker serving (`tidelog serve`, here on ports of its
own, so `localhost:50051` and the Kafka listener's `localhost:9092` in the examples are replaced by its
addresses and `$TIDELOG_SERVER` points the CLI at it), the Quick start's CLI session first, then every Python block in order, each in a fresh
interpreter.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from .server_process import ServerProcess

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CLI_SESSION_START = "tidelog topics create orders --partitions 4\n"


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)]


def test_the_readme_points_at_nothing_outside_the_repository():
    assert "../" not in README
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):  # relative markdown links
        if "://" not in target:
            assert (ROOT / target).exists(), target


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("readme") / "data"), kafka=True).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def session(server, tmp_path_factory):
    """The Quick start's CLI session, run first as the README says (`tidelog` as on PATH after install)."""
    [cli] = [code for lang, code in code_blocks(README) if not lang and code.startswith(CLI_SESSION_START)]
    script = f'set -euo pipefail\ntidelog() {{ "{sys.executable}" -m tidelog "$@"; }}\n{cli}'
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path_factory.mktemp("readme-cli"),
        env={**os.environ, "TIDELOG_SERVER": server.target},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_cli_session_runs(session):
    assert "SERVING" in session


PYTHON_BLOCKS = [code for lang, code in code_blocks(README) if lang == "python"]


def test_the_readme_has_its_python_examples():
    assert len(PYTHON_BLOCKS) >= 3  # embedded, client, consumer group


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_each_python_example_runs_as_pasted(index, server, session, tmp_path_factory):
    code = PYTHON_BLOCKS[index].replace("localhost:50051", server.target).replace("localhost:9092", server.kafka_target)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path_factory.mktemp(f"readme-{index}"),
    )
    assert out.returncode == 0, f"README python block {index + 1} failed:\n{PYTHON_BLOCKS[index]}\n{out.stderr}"
