"""The `tidelog` command line against a real server: round trips, exit codes, one-line errors, --help."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from tidelog import Engine
from tidelog.cli import build_parser

from .server_process import ServerProcess, refused_address, wait_for_file


def tidelog(*args, input=b"", timeout=60, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *args], input=input, capture_output=True, timeout=timeout, env=env
    )


def one_error_line(out) -> str:
    """The single line a failing command writes on stderr (no traceback, no usage block)."""
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tidelog: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("cli") / "data")).start()
    yield srv
    assert srv.stop() == 0


def test_topics_produce_consume_describe_delete_round_trip(server):
    s = f"--server={server.target}"
    assert tidelog("topics", "create", "orders", "--partitions", "4", s).returncode == 0
    assert b"orders" in tidelog("topics", "list", s).stdout.split()  # (other tests of this module share the broker)
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
    assert b"orders" not in tidelog("topics", "list", s).stdout.split()


def test_global_options_go_before_or_after_the_command(server):
    tidelog("topics", "create", "placed", f"--server={server.target}")
    before = tidelog("--server", server.target, "--log-level", "error", "topics", "list")
    after = tidelog("topics", "list", "--server", server.target, "--log-level", "error")
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert b"placed" in before.stdout.split() and b"placed" in after.stdout.split()
    with refused_address() as nowhere:  # given in both places, the one after the command wins
        both = tidelog("--server", nowhere, "topics", "list", "--server", server.target)
    assert both.returncode == 0, both.stderr
    env = {**os.environ, "TIDELOG_SERVER": server.target}
    assert b"placed" in tidelog("topics", "list", env=env).stdout.split()


def test_topic_settings_given_with_set_reach_the_broker(server):
    s = f"--server={server.target}"
    out = tidelog("topics", "create", "kept", "--set", "retention_ms=3600000", "--set", "compression=lz4", s)
    assert out.returncode == 0, out.stderr
    config = json.loads(tidelog("topics", "describe", "kept", "--format", "json", s).stdout)["config"]
    assert config["retention_ms"] == "3600000" and config["compression"] == "lz4"


def test_consume_timeout_stops_when_idle(server):
    s = f"--server={server.target}"
    tidelog("topics", "create", "quiet", s)
    out = tidelog("consume", "quiet", "--from-beginning", "--timeout-ms", "300", s)
    assert out.returncode == 0 and out.stdout == b""


def test_consume_starts_at_the_latest_offset_by_default_and_says_so(server):
    s = f"--server={server.target}"
    tidelog("topics", "create", "late", s)
    assert tidelog("produce", "late", s, input=b"old\n").returncode == 0
    assert tidelog("consume", "late", "--timeout-ms", "300", s).stdout == b""  # the old record is not shown
    assert tidelog("consume", "late", "--from-beginning", "--max", "1", "--format", "value", s).stdout == b"old\n"
    text = " ".join(tidelog("consume", "--help").stdout.decode().split())
    assert "By default reading starts at the latest offset" in text
    assert "a group that has committed nothing starts at the latest offset too" in text


def test_a_closed_stdout_ends_consume_quietly(server):
    s = f"--server={server.target}"
    tidelog("topics", "create", "piped", s)
    assert tidelog("produce", "piped", s, input=b"".join(b"%d\n" % i for i in range(20_000))).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "consume", "piped", "--from-beginning", s],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    try:
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 0 and stderr == b""
    finally:
        proc.kill()
        proc.wait()


def test_failures_exit_1_with_one_line_on_stderr(server):
    out = tidelog("topics", "describe", "nope", f"--server={server.target}")
    assert out.returncode == 1
    assert one_error_line(out) == "tidelog: error: unknown topic 'nope'"
    out = tidelog("topics", "create", "bad/name", f"--server={server.target}")
    assert out.returncode == 1 and one_error_line(out)
    out = tidelog("produce", "nope", f"--server={server.target}", input=b"")
    assert out.returncode == 1 and "unknown topic" in one_error_line(out)  # also when the input is empty


@pytest.fixture(scope="module")
def a_data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli-offline") / "data")
    with Engine.open(path) as eng:
        eng.create_topic("t", 1)
        eng.produce("t", [b"x"], partition=0)
    return path


# Every bad invocation: (arguments, exit code, what its one stderr line says). {data} is an existing data
# directory, {nowhere} an address where nothing listens (a stopped broker): usage errors (2) must be found
# before any broker is asked, runtime errors (1) come from running.
BAD_INVOCATIONS = [
    # runtime: what is named does not exist
    (
        ["serve", "--config", "/nonexistent/tidelog.toml", "--port", "0", "--metrics-port", "-1"],
        1,
        "cannot read config file",
    ),
    (["check", "--data-dir", "/nonexistent"], 1, "no data directory at /nonexistent"),
    (["dump", "--data-dir", "/nonexistent", "--topic", "t"], 1, "no data directory at /nonexistent"),
    (["dump", "--data-dir", "{data}", "--topic", "nosuch"], 1, "no partition nosuch[0]"),
    # usage: values that mean nothing
    (["demo", "--records", "-1", "--data-dir", "{data}"], 2, "--records: must be at least 1"),
    (["demo", "--partitions", "0", "--data-dir", "{data}"], 2, "--partitions: must be at least 1"),
    (["health", "--timeout-ms", "0", "--server", "{nowhere}"], 2, "--timeout-ms: must be more than 0"),
    (["health", "--timeout-s", "0", "--server", "{nowhere}"], 2, "--timeout-s: must be more than 0"),
    (
        ["topics", "create", "x", "--set", "retention_ms=abc", "--server", "{nowhere}"],
        2,
        "--set retention_ms takes an integer",
    ),
    (["topics", "create", "x", "--set", "retention_ms=-5", "--server", "{nowhere}"], 2, "retention_ms must be"),
    (["topics", "create", "x", "--set", "nosuch=1", "--server", "{nowhere}"], 2, "unknown topic setting 'nosuch'"),
    (["topics", "create", "x", "--set", "retention_ms", "--server", "{nowhere}"], 2, "--set takes NAME=VALUE"),
    (["topics", "create", "x", "--partitions", "0", "--server", "{nowhere}"], 2, "--partitions: must be at least 1"),
    (["produce", "x", "--key-field", "0", "--server", "{nowhere}"], 2, "--key-field: must be at least 1"),
    (["produce", "x", "--delimiter", "", "--server", "{nowhere}"], 2, "--delimiter: must not be empty"),
    (
        ["consume", "x", "--group", "g", "--partition", "0", "--server", "{nowhere}"],
        2,
        "--partition and --offset do not apply",
    ),
    (
        ["consume", "x", "--group", "g", "--offset", "3", "--server", "{nowhere}"],
        2,
        "--partition and --offset do not apply",
    ),
    (
        ["consume", "x", "--from-beginning", "--offset", "3", "--server", "{nowhere}"],
        2,
        "--from-beginning and --offset",
    ),
    (["consume", "x", "--max", "0", "--server", "{nowhere}"], 2, "--max: must be at least 1"),
    (["consume", "x", "--offset", "-1", "--server", "{nowhere}"], 2, "--offset: must be 0 or more"),
    (["top", "--once", "--iterations", "2", "--server", "{nowhere}"], 2, "not allowed with argument --once"),
    (["top", "--interval-ms", "0", "--server", "{nowhere}"], 2, "--interval-ms: must be more than 0"),
    (["bench", "produce", "--records", "0", "--server", "{nowhere}"], 2, "--records: must be at least 1"),
    (["bench", "produce", "--data-dir", "{data}", "--server", "{nowhere}"], 2, "--data-dir is for --embedded"),
    (
        ["dump", "--data-dir", "{data}", "--topic", "t", "--from-offset", "5", "--to-offset", "2"],
        2,
        "--to-offset 2 is before --from-offset 5",
    ),
    (["serve", "--port", "70000"], 2, "--port: must be a port"),
    (
        ["serve", "--metrics-port", "-1", "--metrics-port-file", "{data}/m", "--port", "0"],
        2,
        "--metrics-port-file: the metrics endpoint is off",
    ),
    (["serve", "--kafka-port-file", "{data}/k", "--port", "0"], 2, "--kafka-port-file: the Kafka listener is off"),
    (["serve", "--kafka-port", "65536"], 2, "--kafka-port: must be -1 (off), 0 (any free port) or a port"),
    (["--server", "{nowhere}", "check", "--data-dir", "{data}"], 2, "--server does not apply to `tidelog check`"),
    (["topics", "create"], 2, "the following arguments are required: topic"),
    (["no-such-command"], 2, "invalid choice: 'no-such-command'"),
    ([], 2, "the following arguments are required: COMMAND"),
    # runtime: a stopped broker is one line and exit 1, whatever the command (and whatever the input)
    (["topics", "list", "--server", "{nowhere}"], 1, "cannot reach the broker"),
    (["produce", "x", "--server", "{nowhere}"], 1, "cannot reach the broker"),
    (["produce", "x", "--partition", "0", "--server", "{nowhere}"], 1, "cannot reach the broker"),
    (["consume", "x", "--server", "{nowhere}"], 1, "cannot reach the broker"),
    (["consume", "x", "--group", "g", "--server", "{nowhere}"], 1, "cannot reach the broker"),
    (["groups", "list", "--server", "{nowhere}"], 1, "cannot reach the broker"),
    (["top", "--once", "--interval-ms", "100", "--server", "{nowhere}"], 1, "cannot reach the broker"),
    (["health", "--server", "{nowhere}"], 1, "health check of 127.0.0.1:"),
]


@pytest.mark.parametrize(
    "args, code, message", BAD_INVOCATIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_a_bad_invocation_is_one_line_on_stderr_and_its_exit_code(args, code, message, a_data_dir):
    with refused_address() as nowhere:
        out = tidelog(*[a.format(data=a_data_dir, nowhere=nowhere) for a in args])
    line = one_error_line(out)
    assert out.returncode == code, line
    assert message in line, line
    assert not re.search(r"\w+Error\(|<\w+ object", line), line  # never a library's or gRPC's internal object


def test_a_deprecated_spelling_still_works_and_says_so(server):
    out = tidelog("health", "--timeout-s", "3", f"--server={server.target}")
    assert out.returncode == 0 and out.stdout.strip() == b"SERVING"
    assert out.stderr.decode().strip() == "tidelog: warning: --timeout-s is deprecated; use --timeout-ms"


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_option_has_help_that_states_its_default():
    parser = build_parser()
    commands = list(_parsers(parser))
    assert len(commands) > 15
    for command in commands:
        required_groups = [g for g in command._mutually_exclusive_groups if g.required]
        for action in command._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            where = f"{command.prog} {action.option_strings[0]}"
            assert action.help, f"{where} has no help"
            in_required_group = any(action in g._group_actions for g in required_groups)
            if action.default in (None,) and not action.required and not in_required_group:
                assert "default" in action.help, f"{where}: say what happens without it"
        help_text = " ".join(command.format_help().split())
        for action in command._actions:
            if (
                action.option_strings
                and action.help != argparse.SUPPRESS
                and action.default not in (None, False, argparse.SUPPRESS)
                and "default" not in (action.help or "")
            ):
                assert f"(default: {action.default})" in help_text, f"{command.prog} {action.option_strings[0]}"


def test_every_command_has_help():
    for cmd in (
        ["serve"],
        ["topics"],
        ["topics", "create"],
        ["topics", "list"],
        ["topics", "describe"],
        ["topics", "delete"],
        ["produce"],
        ["consume"],
        ["health"],
        ["demo"],
        ["check"],
        ["dump"],
        ["groups"],
        ["groups", "describe"],
        ["groups", "reset-offsets"],
        ["bench"],
        ["top"],
    ):
        out = tidelog(*cmd, "--help")
        assert out.returncode == 0 and b"usage: tidelog" in out.stdout


def test_serve_on_port_0_says_where_it_serves_and_writes_the_ports_to_files(tmp_path):
    port_file, metrics_file = str(tmp_path / "port"), str(tmp_path / "metrics-port")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidelog",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            "0",
            "--port-file",
            port_file,
            "--metrics-port",
            "0",
            "--metrics-port-file",
            metrics_file,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = int(wait_for_file(port_file, proc, 60, "tidelog serve"))
        metrics_port = int(wait_for_file(metrics_file, proc, 60, "tidelog serve"))
        line = proc.stdout.readline().strip()
        assert line == (
            f"tidelog serving address=127.0.0.1:{port} metrics_address=127.0.0.1:{metrics_port} security=open"
        )
        assert port > 0 and metrics_port > 0 and port != metrics_port
        out = tidelog("health", f"--server=127.0.0.1:{port}")
        assert out.returncode == 0 and out.stdout.strip() == b"SERVING"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=10) as reply:
            assert reply.status == 200
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        assert not os.path.exists(port_file) and not os.path.exists(metrics_file)  # a clean stop removes them
    finally:
        proc.kill()
        proc.wait()


def test_serve_says_where_it_serves_in_json_when_it_logs_json(tmp_path):
    port_file = str(tmp_path / "port")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidelog",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            "0",
            "--port-file",
            port_file,
            "--metrics-port",
            "-1",
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = int(wait_for_file(port_file, proc, 60, "tidelog serve"))
        assert json.loads(proc.stdout.readline()) == {
            "event": "serving",
            "address": f"127.0.0.1:{port}",
            "security": "open",
        }
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()


def test_serve_reports_a_busy_port_clearly(server, tmp_path):
    out = tidelog(
        "serve", "--data-dir", str(tmp_path / "other"), "--port", str(server.port), "--metrics-port", "0", timeout=60
    )
    assert out.returncode == 1
    assert b"cannot listen on" in out.stderr


def test_health_command(server):
    out = tidelog("health", f"--server={server.target}")
    assert out.returncode == 0 and out.stdout.strip() == b"SERVING"


def test_demo_writes_records_and_reads_them_back(tmp_path):
    out = tidelog("demo", "--data-dir", str(tmp_path / "demo"), "--records", "5", "--partitions", "2")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    read = [line for line in text.splitlines() if line.startswith("read demo[")]
    assert len(read) == 5 and all("value hello " in line for line in read)
    assert "read back 5 of 5 record(s)" in text


@pytest.mark.parametrize(
    "content, message",
    [
        ("nope = 1\n", "unknown setting(s) nope"),
        ('max_connections = "x"\n', "max_connections must be an integer"),
        ("port = [\n", "cannot read config file"),
        ('[engine]\nfsync = "sometimes"\n', "fsync must be one of"),
        ("[engine.topic_defaults]\nbogus = 2\n", "unknown setting(s) bogus"),
    ],
)
def test_a_bad_config_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "tidelog.toml"
    path.write_text(content)
    out = tidelog(
        "serve", "--config", str(path), "--data-dir", str(tmp_path / "d"), "--port", "0", "--metrics-port", "-1"
    )
    assert out.returncode == 1
    assert message in one_error_line(out)
