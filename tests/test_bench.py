"""`tidelog bench` itself (small sizes): every scenario runs end to end; JSON fields; histogram math."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tidelog.loadgen.histogram import Latency

from .server_process import ServerProcess


def test_percentiles_of_known_latencies():
    lat = Latency()
    for ms in range(1, 1001):  # 1..1000 ms, once each
        lat.record_us(ms * 1000)
    s = lat.summary_ms()
    assert s["p50"] == pytest.approx(500, rel=0.002)
    assert s["p90"] == pytest.approx(900, rel=0.002)
    assert s["p99"] == pytest.approx(990, rel=0.002)
    assert s["p99.9"] == pytest.approx(999, rel=0.002)
    assert s["max"] == pytest.approx(1000, rel=0.002)
    assert s["mean"] == pytest.approx(500.5, rel=0.002)


def test_histograms_merge_across_processes_by_encoding():
    a, b = Latency(), Latency()
    for _ in range(90):
        a.record_us(1000)
    for _ in range(10):
        b.record_us(100_000)
    merged = Latency()
    merged.merge_encoded(a.encode())
    merged.merge_encoded(b.encode())
    assert merged.count == 100
    assert merged.summary_ms()["p50"] == pytest.approx(1, rel=0.002)
    assert merged.summary_ms()["p99"] == pytest.approx(100, rel=0.002)


def test_percentiles_are_within_a_thousandth_above_the_exact_rank():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 2)) + 1 for _ in range(20_000)]  # µs, from 1 to minutes
    lat = Latency()
    for v in values:
        lat.record_us(v)
    ordered = sorted(values)
    for p in (1, 50, 90, 99, 99.9, 100):
        exact = ordered[max(1, int(p / 100 * len(values) + 0.5)) - 1]
        assert exact <= lat.value_at_percentile_us(p) <= exact * (1 + 1 / 1024), p
    assert lat.summary_ms()["max"] == max(values) / 1000
    assert lat.summary_ms()["mean"] == pytest.approx(sum(values) / len(values) / 1000)


def bench(*args):
    out = subprocess.run(
        [sys.executable, "-m", "tidelog", "bench", *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


FIELDS = {"scenario", "target", "records", "bytes", "seconds", "records_per_s", "mb_per_s", "latency_ms", "config"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("bench") / "data"), "--fsync", "never").start()
    yield srv
    srv.stop()


def test_produce_then_consume_against_a_server(server):
    s = f"--server={server.target}"
    produced = bench(
        "produce",
        s,
        "--records",
        "3000",
        "--record-bytes",
        "200",
        "--producers",
        "2",
        "--partitions",
        "2",
        "--topic",
        "b1",
    )
    assert FIELDS <= set(produced) and produced["records"] == 3000 and produced["bytes"] == 600_000
    assert produced["records_per_s"] > 0 and {"p50", "p90", "p99", "p99.9", "max"} <= set(produced["latency_ms"])
    consumed = bench("consume", s, "--records", "3000", "--partitions", "2", "--consumers", "2", "--topic", "b1")
    assert consumed["records"] == 3000 and consumed["bytes"] == 600_000


def test_group_consume_and_fixed_rate_e2e(server):
    s = f"--server={server.target}"
    bench("produce", s, "--records", "500", "--record-bytes", "100", "--topic", "b2", "--partitions", "2")
    grouped = bench("consume", s, "--records", "500", "--group", "g", "--topic", "b2", "--partitions", "2")
    assert grouped["records"] == 500
    e2e = bench(
        "e2e", s, "--rate", "200", "--duration-ms", "2000", "--record-bytes", "64", "--topic", "b3", "--linger-ms", "0"
    )
    assert 300 <= e2e["records"] <= 400 and e2e["latency_ms"]["p50"] > 0


def test_embedded_produce_and_consume(tmp_path):
    d = str(tmp_path / "e")
    produced = bench("produce", "--embedded", "--data-dir", d, "--records", "5000", "--record-bytes", "100")
    assert produced["records"] == 5000 and produced["target"].startswith("embedded")
    consumed = bench("consume", "--embedded", "--data-dir", d, "--records", "5000")
    assert consumed["records"] == 5000 and consumed["bytes"] == 500_000


def test_e2e_refuses_embedded_with_usage_exit_code(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tidelog", "bench", "e2e", "--embedded", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "needs a server" in out.stderr
