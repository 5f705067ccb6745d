"""`tidelog top`: rates from two samples, group lag, and the command against a real server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tidelog.client import Admin, Producer
from tidelog.top import Sample, group_rows, render

from .server_process import ServerProcess, refused_address


def tidelog(*args):
    return subprocess.run([sys.executable, "-m", "tidelog", *args], capture_output=True, text=True, timeout=60)


def test_rates_are_deltas_of_end_offsets_and_sizes_over_the_sample_interval():
    prev = Sample(10.0, {"orders": (3, 100, 10_000), "gone": (1, 5, 50), "resized": (1, 0, 0)})
    cur = Sample(12.0, {"orders": (3, 300, 30_480), "new": (1, 7, 70), "resized": (2, 9, 90)})
    rows = {line.split()[0]: line.split()[1:] for line in render(prev, cur, "srv").splitlines()[3:6]}
    assert rows["orders"][:4] == ["3", "300", "100.0", "10.0"]  # 200 records and 20480 bytes in 2 s
    assert rows["orders"][4] == "KiB/s"
    assert rows["new"][2:4] == ["-", "-"] and rows["resized"][2:4] == ["-", "-"]


def test_group_lag_sums_partitions_with_a_commit_and_takes_the_oldest_record_age():
    info = {
        "partitions": [
            {"topic": "t", "partition": 0, "lag": 6, "time_lag_ms": 1500},
            {"topic": "t", "partition": 1, "lag": 4, "time_lag_ms": 9000},
            {"topic": "t", "partition": 2, "lag": None, "time_lag_ms": None},
            {"topic": "u", "partition": 0, "lag": None, "time_lag_ms": None},
        ]
    }
    assert group_rows(info) == [("t", 10, 9.0, 2), ("u", None, None, 0)]


@pytest.fixture
def server(tmp_path):
    srv = ServerProcess(str(tmp_path / "data")).start()
    yield srv
    srv.stop()


def test_top_once_shows_end_offsets_and_the_lag_of_a_group_that_committed(server):
    with Admin(server.target) as admin:
        admin.create_topic("orders", 2)
        with Producer(server.target) as producer:
            for i in range(10):
                producer.send("orders", b"%d" % i, partition=0)
            for i in range(5):
                producer.send("orders", b"%d" % i, partition=1)
        admin.reset_offsets("billing", "orders", 4, partitions=[0])
    out = tidelog("top", "--once", "--interval-ms", "200", "--server", server.target)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    topic = next(line.split() for line in lines if line.startswith("orders"))
    assert topic[:4] == ["orders", "2", "15", "0.0"]  # no traffic between the two samples
    group = next(line.split() for line in lines if line.startswith("billing"))
    assert group[:3] == ["billing", "orders", "6"] and group[4:] == ["0", "0", "empty"]
    assert float(group[3]) >= 0


def test_top_iterations_prints_that_many_frames(server):
    out = tidelog("top", "--iterations", "2", "--interval-ms", "100", "--server", server.target)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("tidelog top") == 2 and "(no topics)" in out.stdout and "\x1b[" not in out.stdout


def test_top_of_an_unreachable_server_fails_with_one_line():
    with refused_address() as nowhere:
        out = tidelog("top", "--once", "--interval-ms", "100", "--server", nowhere)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "cannot reach" in out.stderr


def test_top_rejects_a_non_positive_interval():
    out = tidelog("top", "--interval-ms", "0")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
