"""The peer suite's harness (benchmarks/report.py, benchmarks/latency_bench.py): no peers, no timing asserted."""

from __future__ import annotations

import json

import pytest

from benchmarks import latency_bench, report
from tidelog.loadgen.histogram import Latency


def _fig(scenario, system, median, tidelog, runs=None):
    runs = runs or [median]
    return {
        "scenario": scenario,
        "system": system,
        "metric": "records/s",
        "median": median,
        "min": min(runs),
        "max": max(runs),
        "runs": runs,
        "tidelog": tidelog,
        "settings": f"{system} settings",
    }


def _lat(system, p50, p99, tidelog, rate=1000):
    pct = lambda v: {"median": v, "min": v, "max": v}  # noqa: E731
    return {
        "scenario": f"e2e latency 1 KiB at {rate:,} msgs/s",
        "system": system,
        "rate": rate,
        "tidelog": tidelog,
        "settings": f"{system} e2e settings",
        "runs": [],
        "sent": [1000],
        "received": [1000],
        "p50": pct(p50),
        "p90": pct(p50),
        "p99": pct(p99),
        "p99.9": pct(p99 * 2),
        "max": pct(p99 * 3),
    }


@pytest.fixture
def synthetic():
    return {
        "mode": "quick",
        "date": "2000-01-02",
        "elapsed_s": 12.0,
        "machine": {"nproc": 2, "cpu_model": "test", "memory_gib": 1, "kernel": "x", "python": "3"},
        "figures": [
            _fig("produce 1 KiB", "tidelog gRPC Producer", 400_000.0, True, [300_000.0, 400_000.0, 500_000.0]),
            _fig("produce 1 KiB", "Redis Streams", 100_000.0, False),
            _fig("produce 1 KiB", "NATS JetStream", 20_000.0, False),
            _fig("durable produce 1 KiB", "tidelog Producer, serve --fsync always", 60_000.0, True),
            _fig("durable produce 1 KiB", "tidelog Producer, serve --fsync never", 100_000.0, True),
            _fig("durable produce 1 KiB", "RabbitMQ (confirms)", 1_000.0, False),
        ],
        "latency": [_lat("tidelog", 0.8, 4.0, True), _lat("Redis Streams", 0.4, 2.0, False)],
        "targets": [],
        "skipped": {"RabbitMQ": "not installed"},
        "versions": {},
        "notes": [],
        "settings": {"Redis Streams": "no persistence"},
        "logs": {"grpc": "text"},
        "machine_load": "Shared machine: other processes used 1.2 cores",
    }


def test_report_writes_json_markdown_and_png(tmp_path, synthetic):
    paths = report.write(synthetic, str(tmp_path))
    stem = tmp_path / "2000-01-02"
    assert [str(stem) + ext for ext in (".json", ".md", ".png", ".log")] == paths

    doc = json.loads((tmp_path / "2000-01-02.json").read_text())
    for key in ("mode", "date", "machine", "figures", "latency", "targets", "skipped", "comparisons", "settings"):
        assert key in doc
    assert "logs" not in doc
    assert doc["skipped"] == {"RabbitMQ": "not installed"}
    fig = doc["figures"][0]
    for key in ("scenario", "system", "metric", "median", "min", "max", "runs", "tidelog", "settings"):
        assert key in fig
    comp = {(c["scenario"], c["system"], c["metric"]): c for c in doc["comparisons"]}
    assert comp[("produce 1 KiB", "Redis Streams", "records/s")]["ratio"] == pytest.approx(4.0)
    assert comp[("produce 1 KiB", "NATS JetStream", "records/s")]["ratio"] == pytest.approx(20.0)
    # latency ratios: peer / tidelog (above 1 = tidelog lower)
    assert comp[("e2e latency 1 KiB at 1,000 msgs/s", "Redis Streams", "p50 ms")]["ratio"] == pytest.approx(0.5)
    targets = {t["target"]: t for t in doc["targets"]}
    assert targets["e2e latency at 1k msgs/s: p50"]["met"] is True
    assert targets["e2e latency at 1k msgs/s: p99"]["met"] is True
    assert targets["gRPC durable produce: fsync always / never (Producer)"]["measured"] == pytest.approx(0.6)

    md = (tmp_path / "2000-01-02.md").read_text()
    assert "## produce 1 KiB (records/s)" in md
    assert "| **tidelog gRPC Producer** | 400.0k (300.0k–500.0k) |" in md
    assert "| Redis Streams | 100.0k | 4.00x | Redis Streams settings |" in md
    assert "RabbitMQ: not installed" in md
    assert "- **Shared machine: other processes used 1.2 cores**" in md
    assert "| **tidelog** | 0.800 | 4.000 | 8.000 | 12.000 | 1,000/1,000 |  | tidelog e2e settings |" in md
    assert "0.50x / 0.50x" in md

    png = (tmp_path / "2000-01-02.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (tmp_path / "2000-01-02-latency.png").exists(), "one rate: no latency-vs-rate chart"


def test_latency_against_rate_is_charted_when_several_rates_were_measured(tmp_path, synthetic):
    synthetic["latency"] += [_lat("tidelog", 2.0, 9.0, True, rate=10_000), _lat("Redis Streams", 0.5, 3, False, 10_000)]
    paths = report.write(synthetic, str(tmp_path))
    chart = tmp_path / "2000-01-02-latency.png"
    assert str(chart) in paths
    png = chart.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_full_mode_stem_and_no_tidelog_scenario(tmp_path, synthetic):
    synthetic["mode"] = "full"
    synthetic["figures"].append(_fig("peers only", "NATS JetStream", 5.0, False))
    paths = report.write(synthetic, str(tmp_path))
    assert paths[0].endswith("2000-01-02-full.json")
    doc = json.loads(open(paths[0]).read())
    assert not [c for c in doc["comparisons"] if c["scenario"] == "peers only"]


def test_schedule_is_start_plus_i_over_rate():
    assert latency_bench.scheduled_ns(1_000, 1000, 0) == 1_000
    assert latency_bench.scheduled_ns(1_000, 1000, 1) == 1_001_000
    assert latency_bench.scheduled_ns(0, 5000, 10) == 2_000_000
    assert latency_bench.scheduled_ns(0, 3, 1) == 333_333_333


def test_latency_is_measured_from_the_scheduled_time():
    lat = Latency()
    v = latency_bench.stamp(b"x" * 100, 5_000_000)
    assert len(v) == 100 and v[8:] == b"x" * 92
    assert latency_bench.record(lat, v, 7_000_000) == 2_000_000
    s = lat.summary_ms()
    assert s["p50"] == pytest.approx(2.0, rel=1e-3)


def test_a_stall_is_charged_to_every_message_it_delayed():
    """Fixed rate 1000/s; the 'broker' takes 10 ms for message 0 and 0 after. With coordinated omission
    (latency from the actual send time) only message 0 would look slow; from the schedule, messages 1..9
    were sent late and carry the delay: latencies 10, 9, 8, ... 1 ms, then 0."""
    now = [0]
    delivered = []
    lat = Latency()

    def clock():
        return now[0]

    def sleep(s):
        now[0] += int(s * 1e9)

    def send(value):
        if not delivered:
            now[0] += 10_000_000  # the first send stalls 10 ms
        delivered.append(value)
        latency_bench.record(lat, value, now[0])  # delivered the moment send returns

    sent = latency_bench.fixed_rate(send, [b"\0" * 16], 1000, 20, cap_s=60, clock=clock, sleep=sleep)
    assert sent == 20
    got = [now_ms for now_ms in (lat.value_at_percentile_us(p) for p in (100,))]
    assert got[0] == pytest.approx(10_000, rel=1e-3)  # µs
    assert lat.count == 20
    # 10 of 20 messages saw a latency >= 1 ms; from the send time only 1 would have
    assert lat.value_at_percentile_us(50) <= 1  # messages 10..19: on time
    assert lat.value_at_percentile_us(55) == pytest.approx(1_000, rel=1e-3)  # message 9: 1 ms late
    assert lat.value_at_percentile_us(95) == pytest.approx(9_000, rel=1e-3)  # message 1: 9 ms late


def test_fixed_rate_stops_at_the_deadline():
    now = [0]

    def clock():
        return now[0]

    def sleep(s):
        now[0] += int(s * 1e9)

    sent = latency_bench.fixed_rate(lambda v: None, [b"\0" * 8], 100, 1_000_000, cap_s=1.0, clock=clock, sleep=sleep)
    assert sent == 100  # 1 s at 100/s


def test_latency_entry_takes_medians_over_runs():
    from benchmarks.suite import latency_entry

    runs = [
        {"sent": 10, "received": 10, "latency_ms": {"p50": v, "p90": v, "p99": 2 * v, "p99.9": 3 * v, "max": 4 * v}}
        for v in (1.0, 3.0, 2.0)
    ]
    e = latency_entry("s", "tidelog", 1000, runs, "x")
    assert e["p50"] == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert e["p99"]["median"] == 4.0 and e["tidelog"] is True
