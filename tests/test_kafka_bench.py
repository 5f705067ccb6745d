"""The Kafka-listener benchmark's harness pieces (benchmarks/kafka_bench.py): a broker started with its Kafka
listener through the harness, the benchmark's confluent-kafka loops on a few records, its latency table and
targets from synthetic results. No peers, no timing asserted."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from benchmarks.harness.payloads import Payloads
from benchmarks.harness.processes import Processes, listening_ports
from benchmarks.harness.rounds import Rounds, Sample
from benchmarks.harness.servers import kafka_answers, start_tidelog
from tests.test_benchmark_harness import _port_free

pytest.importorskip("confluent_kafka", reason="confluent-kafka is a test dependency")

from benchmarks import kafka_bench  # noqa: E402  (needs confluent-kafka)


def _freed(port: int) -> bool:
    for _ in range(50):
        if _port_free(port):
            return True
        time.sleep(0.1)
    return False


def test_a_broker_started_with_its_kafka_listener_owns_both_ports_and_is_stopped_by_pid(tmp_path):
    procs = Processes(str(tmp_path))
    try:
        proc = start_tidelog(procs, str(tmp_path / "data"), kafka=True)
        ports = listening_ports(proc.pid)
        assert proc.port in ports and proc.kafka_port in ports and proc.kafka_port != proc.port
        assert kafka_answers(proc.kafka_port)
        assert "--kafka-port" in proc.popen.args
        plain = start_tidelog(procs, str(tmp_path / "plain"), name="tidelog-plain")
        assert "--kafka-port" not in plain.popen.args and not hasattr(plain, "kafka_port")
    finally:
        procs.stop_all()
    assert procs.running == [] and proc.popen.poll() is not None
    assert _freed(proc.port) and _freed(proc.kafka_port)


def test_the_benchmarks_kafka_loops_produce_and_read_back_every_record(tmp_path):
    procs = Processes(str(tmp_path))
    loop = asyncio.new_event_loop()
    try:
        proc = start_tidelog(procs, str(tmp_path / "data"), kafka=True)
        profile = dataclasses.replace(kafka_bench.QUICK, cap_s=20.0)
        ctx = kafka_bench.Ctx(profile, Rounds(3, 1), loop, proc.target, f"127.0.0.1:{proc.kafka_port}", None)
        try:
            pay = Payloads(1024, 3_000)
            for compression in ("none", "lz4"):
                settings = {**kafka_bench.PRODUCER, "compression.type": compression}
                sample = kafka_bench.kafka_produce_run(ctx, pay, 2_500, settings, compression)
                assert (sample.records, sample.nbytes, sample.capped) == (2_500, 2_500 * 1024, False)
                topic = ctx.new_topic(f"read-{compression}")
                sent, failed, _, _ = kafka_bench.kafka_produce(ctx, topic, pay.values, 2_500, settings, 20.0)
                assert (sent, failed) == (2_500, 0)
                read = kafka_bench.kafka_consume_run(ctx, topic, 1024, 2_501)  # and the untimed first record
                assert (read.records, read.nbytes) == (2_501, 2_501 * 1024)
            assert ctx.notes == {}
        finally:
            ctx.admin.close()
    finally:
        procs.stop_all()
        loop.close()


def test_the_report_has_the_latency_table_and_targets_not_measured_without_redis():
    r = Rounds(3, 0)
    run = {"sent": 1000, "received": 1000, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p99.9": 4.0, "max": 9.0}}
    r.add(kafka_bench.LATENCY, kafka_bench.E_KAFKA, [run, run, run], [])
    for system in (kafka_bench.K_NONE, kafka_bench.K_LZ4, kafka_bench.T_RAW):
        r.add(kafka_bench.PRODUCE, system, [Sample(1000, 1024_000, 0.01)] * 3, [])
    rows, entries = kafka_bench.latency_report(r, None)
    assert any(kafka_bench.E_KAFKA in row and "1.00 (1.00 - 1.00)" in row and "3,000 / 3,000" in row for row in rows)
    assert entries[0]["p99"]["median"] == 3.0
    targets = {name: measured for _, name, measured, _, _ in kafka_bench.targets(r)}
    assert targets["Kafka-protocol produce / tidelog gRPC raw-batch produce (1 KiB)"]["ratio"] == pytest.approx(1.0)
    assert targets["Kafka-protocol produce / Redis XADD"] is None
