"""The benchmarks' harness (benchmarks/harness) and the peers' bookkeeping: no peers, no timing asserted."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from benchmarks.harness.machine import shared_machine_note
from benchmarks.harness.processes import Processes, listening_ports
from benchmarks.harness.rounds import Rounds, Sample, Stopwatch, ratio
from benchmarks.harness.servers import cluster_config, start_cluster, start_etcd, start_tidelog_again
from benchmarks.harness.tables import Compare, Section, sections_report, targets_table
from benchmarks.rabbitmq_bench import Confirms

# A server that binds the port it is given, as the peers do.
LISTEN = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
time.sleep(120)
"""


def _server(how: str):
    """The listener itself, or (as rabbitmq-server's script runs the Erlang VM) a child of the process started."""
    if how == "self":
        return lambda port: [sys.executable, "-c", LISTEN, str(port)]
    return lambda port: [
        sys.executable,
        "-c",
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {LISTEN!r}, sys.argv[1]])",
        str(port),
    ]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.parametrize("how", ["self", "child"])
def test_a_server_is_ready_once_its_own_process_tree_listens_and_is_stopped_by_pid(tmp_path, how):
    procs = Processes(str(tmp_path))
    proc = procs.serve("listener", _server(how), lambda port: True, timeout_s=30)
    try:
        assert proc.port in listening_ports(proc.pid)
        assert proc.target == f"127.0.0.1:{proc.port}"
    finally:
        procs.stop_all()
    assert proc.popen.poll() is not None and procs.running == []
    for _ in range(50):  # bounded: the listener of the "child" case exits just after its parent
        if _port_free(proc.port):
            break
        time.sleep(0.1)
    assert _port_free(proc.port)


def test_a_port_held_by_another_process_is_not_taken_for_the_server(tmp_path):
    """The server cannot bind (someone else holds the port): it never counts as ready, even though the port
    answers, and `serve` gives up instead of measuring a stranger."""
    procs = Processes(str(tmp_path))
    squatter = subprocess.Popen([sys.executable, "-c", LISTEN, "0"])
    held = procs.serve("squatter", lambda port: [sys.executable, "-c", LISTEN, str(port)], lambda port: True)
    squatter.kill()
    squatter.wait()
    try:
        with pytest.raises(RuntimeError, match="was not ready"):
            # sleeps instead of binding; the port it is told about is free but nobody in its tree listens
            procs.serve(
                "idle",
                lambda port: [sys.executable, "-c", "import time; time.sleep(60)"],
                lambda port: True,
                timeout_s=2,
            )
        assert held.port in listening_ports(held.pid)
    finally:
        procs.stop_all()
    assert procs.running == []


def test_kill_is_a_sigkill_by_pid_and_the_process_is_reaped(tmp_path):
    procs = Processes(str(tmp_path))
    proc = procs.serve("listener", _server("child"), lambda port: True, timeout_s=30)
    try:
        t = procs.kill(proc)
        assert t <= time.monotonic()
        assert proc.popen.returncode == -signal.SIGKILL and procs.running == []
        for _ in range(50):  # the child listener went with its process group
            if _port_free(proc.port):
                break
            time.sleep(0.1)
        assert _port_free(proc.port)
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_a_cluster_of_one_on_its_own_etcd_and_a_broker_started_again_after_a_kill(tmp_path):
    """The harness's etcd and clustered brokers: ready when they listen on their own ports and the cluster
    lists the broker; a killed broker comes back on the same port with its data; all stopped by PID."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed")
    from tidelog.client import Admin, Producer

    procs = Processes(str(tmp_path))
    try:
        etcd = start_etcd(procs, str(tmp_path / "etcd"))
        assert etcd.port in listening_ports(etcd.pid)
        config = cluster_config(str(tmp_path / "c.toml"), "harness", 2000, replica_fetch_wait_ms=200)
        assert 'cluster_name = "harness"' in open(config).read()
        (broker,) = start_cluster(procs, str(tmp_path / "c"), etcd, 1, "h", config)
        assert "--cluster" in broker.popen.args and broker.name == "h-b1"
        with Admin(broker.target) as admin:
            admin.create_topic("t", 1, replication_factor=1)
            with Producer(broker.target, acks="all") as producer:
                producer.send("t", b"kept", partition=0).result(30)
            procs.kill(broker)
            again = start_tidelog_again(procs, broker)
            assert again.port == broker.port and again.pid != broker.pid
            assert admin.list_offsets("t", 0).log_end == 1
    finally:
        procs.stop_all()
    assert procs.running == []


def test_rounds_rotate_the_order_and_keep_the_warm_up_apart():
    calls = []

    def system(name, value):
        def run():
            calls.append(name)
            return Sample(records=value * (len(calls)), nbytes=0, seconds=1.0)

        return run

    rounds = Rounds(runs=3, warmup=1)
    rounds.run({"s": {"a": system("a", 1), "b": system("b", 1), "c": system("c", 1)}})
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert [s.records for s in rounds.warmups[("s", "a")]] == [1]
    assert [s.records for s in rounds.samples("s", "a")] == [6, 8, 10]
    assert rounds.systems("s") == ["a", "b", "c"] and rounds.sections() == ["s"]
    assert rounds.median("s", "a", "records/s") == 8


def test_sections_run_in_turn_within_each_round():
    calls = []
    rounds = Rounds(runs=2, warmup=0)
    rounds.run({k: {"x": (lambda k=k: calls.append(k) or Sample(1, 1, 1.0))} for k in ("one", "two")})
    assert calls == ["one", "two", "one", "two"]


def test_ratios_are_of_medians_with_the_per_round_range():
    a = [Sample(100, 0, 1.0), Sample(300, 0, 1.0), Sample(200, 0, 1.0)]
    b = [Sample(50, 0, 1.0), Sample(100, 0, 1.0), Sample(200, 0, 1.0)]
    r = ratio(a, b)
    assert r["ratio"] == pytest.approx(2.0)
    assert r["paired"] == pytest.approx([2.0, 3.0, 1.0])
    assert (r["paired_min"], r["paired_max"]) == (pytest.approx(1.0), pytest.approx(3.0))


def test_a_stopwatch_marks_capped_only_when_work_was_left():
    late = Stopwatch(cap_s=-1.0)
    assert late.expired(done=10, total=10) and not late.capped
    assert late.expired(done=5, total=10) and late.capped
    assert late.expired(done=10, total=10) and late.capped  # another thread's leftover work still counts
    assert not Stopwatch(cap_s=3600).expired(done=1, total=10)
    sample = late.sample(records=5, nbytes=500)
    assert sample.capped and sample.records == 5 and sample.seconds > 0


def test_section_tables_and_json_carry_medians_ranges_and_ratios():
    rounds = Rounds(runs=3, warmup=0)
    values = {"tidelog": iter([300, 200, 100]), "peer": iter([100, 100, 50])}
    rounds.run(
        {
            "produce": {
                name: (lambda it=it: Sample(next(it) * 1000, next(iter([0])), 1.0)) for name, it in values.items()
            }
        }
    )
    sec = Section("produce", "Produce", ("records/s",), (Compare("tidelog / this", "tidelog", None, "tidelog"),))
    lines, results = sections_report(rounds, [sec], {("produce", "peer"): ["1 record lost"]})
    text = "\n".join(lines)
    assert "| peer (*) |" in text and "(*) peer: in 1 of 3 runs" in text
    # rotation: tidelog ran 300k, 200k, 100k and the peer 100k, 50k, 100k (rounds 1-3)
    (r,) = results["ratios"]
    assert r["numerator"] == "tidelog" and r["denominator"] == "peer"
    assert r["ratio"] == pytest.approx(2.0)
    series = {s["system"]: s for s in results["series"]}
    assert series["tidelog"]["median"] == 200_000 and series["tidelog"]["min"] == 100_000
    assert "CPU during this section" in text


def test_targets_show_what_was_not_measured_and_whether_each_was_met():
    rows = [
        ("produce", "ratio", {"ratio": 2.0, "paired_min": 1.5, "paired_max": 2.5}, 1.5, "x"),
        ("produce", "rate", 900.0, 1000.0, "MB/s"),
        ("produce", "missing peer", None, 3.0, "x"),
        ("consume", "not run", None, 3.0, "x"),
    ]
    lines, results = targets_table(rows, ["produce"])
    assert [t["met"] for t in results] == [True, False, None]
    assert "| ratio | 2.00x (1.50-2.50) | >= 1.50x | yes |" in lines
    assert "| missing peer | not measured | >= 3.00x | - |" in lines


def test_a_time_target_is_a_maximum():
    rows = [("latency", "p99 fast", 4.2, 5.0, "ms"), ("latency", "p99 slow", 7.5, 5.0, "ms")]
    lines, results = targets_table(rows, ["latency"])
    assert [t["met"] for t in results] == [True, False]
    assert "| p99 fast | 4.20 ms | <= 5.00 ms | yes |" in lines
    assert "| p99 slow | 7.50 ms | <= 5.00 ms | NO |" in lines


def test_confirms_settle_each_publish_once_in_any_order():
    c = Confirms()
    for _ in range(10):
        c.published_one()
    assert c.in_flight == 10
    c.settle(3, multiple=False, ok=True)  # out of order, one by one
    c.settle(5, multiple=False, ok=False)
    assert (c.acked, c.nacked, c.in_flight) == (1, 1, 8)
    c.settle(6, multiple=True, ok=True)  # 1, 2, 4, 6: 3 and 5 were settled already
    assert (c.acked, c.nacked, c.in_flight) == (5, 1, 4)
    c.settle(6, multiple=False, ok=True)  # a repeated confirm settles nothing
    c.settle(10, multiple=True, ok=True)
    assert (c.acked, c.nacked, c.in_flight) == (9, 1, 0)


def test_a_report_says_when_other_jobs_shared_the_machine():
    quiet = {"a": {"other_cores": 0.01}, "b": {"other_cores": 0.05}}
    assert "no section was disturbed" in shared_machine_note(quiet)
    busy = {**quiet, "c": {"other_cores": 1.6}, "d": {"other_cores": 0.9}}
    note = shared_machine_note(busy)
    assert note.startswith("Shared machine: other processes used 0.01-1.60 cores") and "2 of them" in note
    assert "noisy" in note
    assert shared_machine_note({}) is None
