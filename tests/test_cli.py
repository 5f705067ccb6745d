"""The `tidelog` command line against a real server: round trips, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .server_process import ServerProcess


def tidelog(*args, input=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "tidelog", *args], input=input, capture_output=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("cli") / "data")).start()
    yield srv
    assert srv.stop() == 0


def test_topics_produce_consume_describe_delete_round_trip(server):
    s = f"--server={server.target}"
    assert tidelog("topics", "create", "orders", "--partitions", "4", s).returncode == 0
    assert tidelog("topics", "list", s).stdout.split() == [b"orders"]
    lines = b"".join(b"user%d\tevent %d\n" % (i % 7, i) for i in range(1000))
    out = tidelog("produce", "orders", "--key-field", "1", s, input=lines)
    assert out.returncode == 0, out.stderr
    desc = json.loads(tidelog("topics", "describe", "orders", "--format", "json", s).stdout)
    assert sum(p["log_end"] for p in desc["partitions"]) == 1000
    assert {p["partition"] for p in desc["partitions"] if p["log_end"]} <= {0, 1, 2, 3}
    text = tidelog("topics", "describe", "orders", s).stdout.decode()
    assert "partition" in text and "segments" in text
    got = tidelog("consume", "orders", "--from-beginning", "--max", "1000", "--format", "json", s)
    records = [json.loads(line) for line in got.stdout.splitlines()]
    assert len(records) == 1000
    assert sorted(r["value"] for r in records) == sorted(line.decode() for line in lines.splitlines())
    for r in records:  # keyed: every record of a user sits in one partition
        assert r["key"] == r["value"].split("\t")[0]
    by_key = {}
    for r in records:
        by_key.setdefault(r["key"], set()).add(r["partition"])
    assert all(len(parts) == 1 for parts in by_key.values())
    one = tidelog("consume", "orders", "--partition", "0", "--offset", "0", "--max", "2", s)
    assert len(one.stdout.splitlines()) == 2
    assert tidelog("topics", "delete", "orders", s).returncode == 0
    assert tidelog("topics", "list", s).stdout == b""


def test_consume_timeout_stops_when_idle(server):
    s = f"--server={server.target}"
    tidelog("topics", "create", "quiet", s)
    out = tidelog("consume", "quiet", "--from-beginning", "--timeout-ms", "300", s)
    assert out.returncode == 0 and out.stdout == b""


def test_failures_exit_1_with_one_line_on_stderr(server):
    out = tidelog("topics", "describe", "nope", f"--server={server.target}")
    assert out.returncode == 1
    assert out.stderr.decode().strip().splitlines() == ["tidelog: error: unknown topic 'nope'"]
    out = tidelog("topics", "create", "bad/name", f"--server={server.target}")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1


def test_unreachable_server_exits_1():
    out = tidelog("topics", "list", "--server=127.0.0.1:1")
    assert out.returncode == 1 and b"cannot reach the broker" in out.stderr


def test_bad_usage_exits_2_and_every_command_has_help():
    assert tidelog("topics", "create").returncode == 2
    assert tidelog("no-such-command").returncode == 2
    for cmd in (["serve"], ["topics"], ["topics", "create"], ["topics", "list"], ["topics", "describe"],
                ["topics", "delete"], ["produce"], ["consume"], ["health"], ["demo"], ["check"], ["dump"],
                ["groups"], ["groups", "describe"], ["bench"]):
        out = tidelog(*cmd, "--help")
        assert out.returncode == 0 and b"usage: tidelog" in out.stdout


def test_serve_reports_a_busy_port_clearly(server, tmp_path):
    out = tidelog("serve", "--data-dir", str(tmp_path / "other"), "--port", str(server.port), "--metrics-port", "0",
                  timeout=60)
    assert out.returncode == 1
    assert b"cannot listen on" in out.stderr


def test_health_command(server):
    out = tidelog("health", f"--server={server.target}")
    assert out.returncode == 0 and out.stdout.strip() == b"SERVING"


@pytest.mark.parametrize("content, message", [
    ('nope = 1\n', "unknown setting(s) nope"),
    ('port = "x"\n', "port must be an integer"),
    ('port = [\n', "cannot read config file"),
    ('[engine]\nfsync = "sometimes"\n', "fsync must be one of"),
    ('[engine.topic_defaults]\nbogus = 2\n', "unknown setting(s) bogus"),
])
def test_a_bad_config_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "tidelog.toml"
    path.write_text(content)
    out = tidelog("serve", "--config", str(path), "--data-dir", str(tmp_path / "d"))
    assert out.returncode in (1, 2)
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
