"""`tidelog queues ...` and `tidelog produce --delay-ms` against a real broker: a queue received and
acknowledged from the command line, described, its dead letters redriven, reset and deleted; exit codes
and one-line errors."""

from __future__ import annotations

import json
import time

import pytest

from .server_process import ServerProcess
from .test_cli import one_error_line, tidelog


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("cliq") / "data")).start()
    yield srv
    assert srv.stop() == 0


def test_receive_describe_redrive_reset_and_delete_a_queue(server):
    s = f"--server={server.target}"
    assert tidelog("topics", "create", "jobs", "--partitions", "2", s).returncode == 0
    assert tidelog("produce", "jobs", s, input=b"a\nb\nc\n").returncode == 0
    assert tidelog("produce", "jobs", "--delay-ms", "60000", s, input=b"later\n").returncode == 0
    got = tidelog("queues", "receive", "w", "--topic", "jobs", "--timeout-ms", "1500", "--format", "value", s)
    assert got.returncode == 0, got.stderr
    assert sorted(got.stdout.split()) == [b"a", b"b", b"c"]  # "later" waits its 60 s
    assert tidelog("queues", "list", s).stdout.split() == [b"w"]
    desc = json.loads(tidelog("queues", "describe", "w", "--format", "json", s).stdout)
    assert desc["totals"]["acked"] == 3 and sum(p["delayed"] for p in desc["partitions"]) == 1
    text = tidelog("queues", "describe", "w", s).stdout.decode()
    assert "lock_ms 30000" in text and "delayed" in text
    # plain consumers see the delayed record at once
    plain = tidelog("consume", "jobs", "--from-beginning", "--max", "4", "--format", "value", s)
    assert b"later" in plain.stdout.split()

    # a dead letter, redriven back once
    assert tidelog("topics", "create", "jobs.dlq", s).returncode == 0
    from tidelog.client import QueueConsumer

    with QueueConsumer(server.target, queue="d", topics=["jobs"], dead_letter_topic="jobs.dlq") as q:
        for m in q.receive(3, wait_ms=2000):
            m.reject(reason="broken")
    time.sleep(0.1)
    moved = tidelog("queues", "redrive", "jobs.dlq", "--to", "jobs", s)
    assert moved.returncode == 0 and b"moved 3 record(s)" in moved.stdout, moved.stderr
    assert b"moved 0 record(s)" in tidelog("queues", "redrive", "jobs.dlq", "--to", "jobs", s).stdout

    assert tidelog("queues", "reset", "w", "--to-earliest", s).returncode == 0
    again = tidelog("queues", "receive", "w", "--timeout-ms", "1500", "--format", "value", s)
    assert sorted(again.stdout.split()) == sorted([b"a", b"b", b"c"] * 2)  # the first three and the redriven
    assert tidelog("queues", "delete", "w", s).returncode == 0
    assert tidelog("queues", "list", s).stdout.split() == [b"d"]


def test_queue_commands_fail_clearly(server):
    s = f"--server={server.target}"
    out = tidelog("queues", "describe", "missing", s)
    assert out.returncode == 1 and "unknown queue 'missing'" in one_error_line(out)
    out = tidelog("queues", "receive", "missing", "--timeout-ms", "100", s)
    assert out.returncode == 2 and "give --topic" in one_error_line(out)
    out = tidelog("queues", "receive", "q", "--topic", "nope", s)
    assert out.returncode == 1 and "nope" in one_error_line(out)
    out = tidelog("queues", "reset", "missing", s)
    assert out.returncode == 2
    out = tidelog("produce", "jobs", "--delay-ms", "-5", s)
    assert out.returncode == 2
