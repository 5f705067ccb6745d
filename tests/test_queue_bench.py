"""benchmarks/queue_bench.py without peers: the worker loop on an embedded queue, the drained-queue check,
and the report from synthetic runs. No timing asserted."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from benchmarks import queue_bench as qb
from benchmarks.groups_bench import GroupSample
from benchmarks.harness.rounds import Rounds
from tidelog.client import QueueConsumer


def test_workers_acknowledge_every_record_once_and_leave_the_queue_drained(tmp_path, monkeypatch):
    monkeypatch.setattr(qb, "IDLE_S", 0.1)
    pool = [[b"%04d" % (b * 1000 + i) + b"x" * 1020 for i in range(1000)] for b in range(3)]
    engine, manager = qb.open_embedded(str(tmp_path / "data"), pool, 3000)
    try:
        consumers = [QueueConsumer(manager, queue="q", topics=[qb.TOPIC], consumer_id=f"w{i}") for i in range(3)]
        results: list = [None] * 3

        def work(i: int) -> None:
            results[i] = qb.tidelog_work(consumers[i], qb.RECEIVE, 60.0, qb.time.thread_time)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for q in consumers:
            q.close()
        assert sum(r["records"] for r in results) == 3000
        assert sum(r["bytes"] for r in results) == 3000 * 1024
        assert not any(r["refused"] or r["capped"] for r in results)
        assert qb._queue_left(manager.describe("q"), 3000) == []
        assert qb._queue_left(manager.describe("q"), 3001)  # a count that does not match is reported
    finally:
        engine.close()


def _sample(rps: float, k: int) -> GroupSample:
    members = [{"records": 1000 // k, "receives": 10, "refused": 0, "cpu_s": 0.1, "first_record_s": 0.01}] * k
    return GroupSample(1000, 1000 * 1024, 1000 / rps, False, 0.1, members, 0.5, 1.0)


def _latency(p99: float) -> dict:
    ms = {"p50": p99 / 3, "p90": p99 / 2, "p99": p99, "p99.9": p99 * 2, "max": p99 * 3}
    return {"sent": 4000, "received": 4000, "latency_ms": ms}


def test_the_report_gives_ratios_per_worker_count_latency_and_the_targets():
    p = qb.Profile("test", runs=3, warmup=0, records=1000, workers=(1, 4), cap_s=1, rate=1000, e2e_s=4)
    rounds = Rounds(3, 0)
    rates = {qb.T_GRPC: 30_000, qb.T_EMB: 60_000, qb.RABBIT: 10_000, qb.REDIS: 40_000}
    for k in p.workers:
        for system, rps in rates.items():
            rounds.add(qb.section(k), system, [_sample(rps * k, k) for _ in range(3)], [])
    for system, p99 in ((qb.T_GRPC, 4.0), (qb.RABBIT, 9.0)):
        rounds.add(qb.LATENCY, system, [_latency(p99) for _ in range(3)], [])
    info = {
        "nproc": 2,
        "cpu_model": "test CPU",
        "memory_gib": 1,
        "kernel": "6",
        "python": "3.11",
        "tidelog": "0",
        "malloc": "default",
        "tmp_dir": "/tmp",
    }
    text, results = qb.report(rounds, SimpleNamespace(notes={}), p, info, {qb.NATS: "not installed"}, 1.0)
    assert "## Per-message ack throughput, 4 workers" in text
    assert "| 4 workers / 1 | 4.00x" in text  # scaling
    goals = {t["target"]: t for t in results["targets"]}
    assert goals["per-message ack throughput, 1 worker: tidelog (gRPC) / RabbitMQ"]["met"] is True  # 3.0x
    assert goals["per-message ack throughput, 4 workers: tidelog (gRPC) / Redis Streams"]["met"] is False
    assert goals["job latency p99 at 1,000 jobs/s, tidelog (gRPC)"]["met"] is True
    assert [e["system"] for e in results["latency"]] == [qb.T_GRPC, qb.RABBIT]
    assert "NATS JetStream skipped: not installed" in text
