"""Cluster benchmark: replicated produce, consume from the leader, leader failover, brokers per host.

    python -m benchmarks.cluster_bench [--quick] [--json PATH] [--out DIR] [--runs N] [--kills N]
                                       [--only produce,consume,failover,scaling] [--tmp DIR]

Everything runs on 127.0.0.1 in one invocation, started through the harness (each server on a port its own
process tree bound, stopped by PID): one etcd shared by three clusters under different cluster names (a
cluster of 1, of 3 and, for the last section, of 2 brokers) and one plain `tidelog serve` (no cluster).

1. produce: 1 KiB records, `Producer(linger_ms=5, batch_bytes=1 MiB)` over 3 partitions: the plain broker,
   the cluster of 1 (RF 1), the cluster of 3 with RF 3 and acks=1, and with acks=all and
   min_insync_replicas=2. Only acknowledged records count; after each run the end offsets must add up to
   what was acknowledged (a mismatch is printed and footnoted).
2. consume: the same data set (written with acks=all on RF 3) read back by one Consumer per partition from
   its leader, vs the plain broker.
3. failover: a producer sends acks=all every few ms, a consumer follows; the leader of the partition is
   SIGKILLed; kill -> first acknowledgement of a record sent after the kill, kill -> the consumer reads such
   a record; the broker is restarted and the ISR full again before the next kill. At the end every
   acknowledged record must be in the log exactly once.
4. scaling: a cluster of 1 vs a cluster of 2 brokers on this host (RF 1, 4 partitions, 2 producer processes
   sending to every partition).

Figures as the other scripts make them (benchmarks/harness): systems interleaved round by round, warm-up
discarded, medians with min-max, same-run ratios. This is a measuring script: it asserts nothing about
speed. Results: benchmarks/results/<date>-cluster.{md,json} (`-cluster-quick` with --quick).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import multiprocessing
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from .harness import cli
from .harness.machine import announce, machine_info, machine_line, shared_machine_note
from .harness.payloads import SEED, MiB, make_pool
from .harness.processes import Proc, Processes, log, workspace
from .harness.rounds import Rounds, Sample, Stopwatch
from .harness.servers import (
    Unavailable,
    cluster_config,
    start_cluster,
    start_etcd,
    start_tidelog,
    start_tidelog_again,
)
from .harness.tables import Compare, Section, fmt_ratio, sections_report

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RECORD_BYTES = 1024
PARTITIONS = 3
SCALING_PARTITIONS = 4
SCALING_PRODUCERS = 2
LINGER_MS = 5
SESSION_MS = 2000  # broker_session_timeout_ms of every cluster (the etcd lease TTL: 2 s)
FAILOVER_TARGET_S = SESSION_MS / 1000 + 2.0
RF3_TARGET = 0.3  # RF 3 acks=all / RF 1

S_SINGLE = "single broker (no cluster)"
S_RF1 = "cluster of 1, RF 1"
S_ACKS1 = "3 brokers, RF 3, acks=1"
S_ALL = "3 brokers, RF 3, acks=all"
C_SINGLE = "single broker (no cluster)"
C_RF3 = "3 brokers, RF 3, from the leaders"
B_ONE = "1 broker"
B_TWO = "2 brokers"
PARTS = {"produce", "consume", "failover", "scaling"}


@dataclass(frozen=True)
class Profile:
    name: str
    runs: int
    warmup: int
    records: int  # produced per run (section 1), preloaded and read per run (section 2)
    scaling_records: int  # per producer process, per run (section 4)
    pool_batches: int  # distinct 1000-record payload batches, reused cyclically
    cap_s: float  # a timed loop stops past this (marked "capped")
    kills: int  # leader kills in the failover section
    send_interval_s: float  # the failover producer's pace
    failover_timeout_s: float  # bound of one kill's wait for an ack and a read after it
    isr_timeout_s: float  # bound of the wait for a full ISR after the restart


QUICK = Profile(
    "quick",
    runs=3,
    warmup=1,
    records=100_000,
    scaling_records=50_000,
    pool_batches=32,
    cap_s=15.0,
    kills=3,
    send_interval_s=0.005,
    failover_timeout_s=30.0,
    isr_timeout_s=60.0,
)
DEFAULT = Profile(
    "default",
    runs=5,
    warmup=1,
    records=300_000,
    scaling_records=150_000,
    pool_batches=64,
    cap_s=30.0,
    kills=12,
    send_interval_s=0.005,
    failover_timeout_s=30.0,
    isr_timeout_s=60.0,
)


def now() -> float:
    """CLOCK_MONOTONIC (time.monotonic on Linux): one clock for the whole machine, producer processes included."""
    return time.monotonic()


# -- the servers -----------------------------------------------------------------------------------------
@dataclass
class Target:
    """A system of the produce/consume sections: where its clients connect and how its topics are made."""

    bootstrap: str
    rf: int | None  # None: a plain broker (no replication factor)
    acks: object
    min_isr: int | None = None


@dataclass
class Ctx:
    p: Profile
    procs: Processes
    values: list[bytes] = field(default_factory=list)
    etcd: Proc | None = None
    single: Proc | None = None
    clusters: dict[str, list[Proc]] = field(default_factory=dict)
    admins: dict[str, object] = field(default_factory=dict)
    notes: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # mismatches, losses, stalls: printed loudly

    def bootstrap(self, cluster: str) -> str:
        return ",".join(b.target for b in self.clusters[cluster])

    def admin(self, bootstrap: str):
        from tidelog.client import Admin

        if bootstrap not in self.admins:
            self.admins[bootstrap] = Admin(bootstrap, timeout_s=10.0)
        return self.admins[bootstrap]

    def note(self, section: str, system: str, text: str) -> None:
        self.notes.setdefault((section, system), []).append(text)
        self.problem(f"{section} / {system}: {text}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        log(f"!!! {text}")

    def close(self) -> None:
        for admin in self.admins.values():
            admin.close()
        self.admins.clear()


def start_servers(ctx: Ctx, parts: set[str]) -> None:
    work = ctx.procs.tmp
    if parts & {"produce", "consume"}:
        ctx.single = start_tidelog(ctx.procs, os.path.join(work, "single"), name="single-broker")
    ctx.etcd = start_etcd(ctx.procs, os.path.join(work, "etcd"))
    wanted = {"c1": 1} if parts & {"produce", "scaling"} else {}
    if parts & {"produce", "consume", "failover"}:
        wanted["c3"] = 3
    for name, n in wanted.items():
        start_named_cluster(ctx, name, n)


def start_named_cluster(ctx: Ctx, name: str, brokers: int) -> None:
    config = cluster_config(os.path.join(ctx.procs.tmp, f"{name}.toml"), name, SESSION_MS)
    ctx.clusters[name] = start_cluster(ctx.procs, os.path.join(ctx.procs.tmp, name), ctx.etcd, brokers, name, config)


def stop_cluster(ctx: Ctx, name: str) -> None:
    boot = ctx.bootstrap(name)
    admin = ctx.admins.pop(boot, None)
    if admin is not None:
        admin.close()
    for proc in reversed(ctx.clusters.pop(name)):
        ctx.procs.stop(proc)


def create_topic(ctx: Ctx, t: Target, topic: str, partitions: int, timeout_s: float = 30.0) -> None:
    """Create the topic and wait (untimed, bounded) until every partition has a leader and a full ISR."""
    admin = ctx.admin(t.bootstrap)
    config = {} if t.min_isr is None else {"min_insync_replicas": str(t.min_isr)}
    admin.create_topic(topic, partitions, replication_factor=t.rf, **config)
    if t.rf is None:
        return
    deadline = now() + timeout_s
    while True:
        try:
            parts = admin.metadata([topic]).topics[0].partitions
            if len(parts) == partitions and all(p.leader_address and len(p.isr) == t.rf for p in parts):
                # Metadata names the leaders before they all know the topic (a produce to one may meet
                # UNKNOWN_TOPIC, which the Producer does not retry): wait until each leader answers for it.
                for p in range(partitions):
                    admin.list_offsets(topic, p)
                return
        except Exception as exc:  # not there yet
            parts = exc
        if now() > deadline:
            raise RuntimeError(f"{topic}: no leaders with a full ISR after {timeout_s:.0f} s: {parts}")
        time.sleep(0.05)


def end_offsets(ctx: Ctx, t: Target, topic: str, partitions: int) -> list:
    admin = ctx.admin(t.bootstrap)
    return [admin.list_offsets(topic, p) for p in range(partitions)]


# -- 1. produce ------------------------------------------------------------------------------------------
@dataclass
class ProduceSample(Sample):
    sent: int = 0
    failed: int = 0
    in_log: int = 0

    def details(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "in_log": self.in_log}


def produce_run(ctx: Ctx, system: str, t: Target, topic: str) -> ProduceSample:
    """Producer(linger_ms=5, batch_bytes=1 MiB, acks) appending to the system's 3-partition topic, record i
    to partition i % 3, then flush(); timed after one record per partition was acknowledged (the streams
    are up). Counts the records whose futures succeeded, then checks that the end offsets moved by exactly
    that (plus the first records)."""
    from tidelog.client import Producer

    values, npool, n = ctx.values, len(ctx.values), ctx.p.records
    before = sum(o.log_end for o in end_offsets(ctx, t, topic, PARTITIONS))
    with Producer(t.bootstrap, acks=t.acks, linger_ms=LINGER_MS, batch_bytes=MiB) as producer:
        for p in range(PARTITIONS):  # one record per partition: every leader's stream is open
            producer.send(topic, values[p], partition=p).result(30)
        send = producer.send
        futures = []
        clock = Stopwatch(ctx.p.cap_s)
        for i in range(n):
            futures.append(send(topic, values[i % npool], partition=i % PARTITIONS))
            if not i & 1023 and clock.expired(i + 1, n):
                break
        producer.flush(ctx.p.cap_s + 120)
        dt = clock.elapsed()
    failed = sum(f.exception(0) is not None for f in futures)
    acked = len(futures) - failed
    offsets = end_offsets(ctx, t, topic, PARTITIONS)
    in_log = sum(o.log_end for o in offsets) - before - PARTITIONS
    if failed:
        ctx.note("produce", system, f"{failed:,} of {len(futures):,} sends failed (not counted)")
    if in_log != acked:
        ctx.note(
            "produce",
            system,
            f"MISMATCH: {acked:,} records acknowledged but the log grew by {in_log:,} "
            f"(end offsets {[o.log_end for o in offsets]}, high watermarks {[o.high_watermark for o in offsets]})",
        )
    return ProduceSample(acked, acked * RECORD_BYTES, dt, clock.capped, len(futures), failed, in_log)


# -- 2. consume ------------------------------------------------------------------------------------------
def preload(ctx: Ctx, t: Target, topic: str, n: int) -> list[int]:
    """n records over 3 partitions with the target's acks (untimed); the end offsets, checked."""
    from tidelog.client import Producer

    create_topic(ctx, t, topic, PARTITIONS)
    with Producer(t.bootstrap, acks=t.acks, linger_ms=LINGER_MS, batch_bytes=MiB) as producer:
        futures = [producer.send(topic, ctx.values[i % len(ctx.values)], partition=i % PARTITIONS) for i in range(n)]
        producer.flush(300)
    failed = sum(f.exception(0) is not None for f in futures)
    ends = [o.log_end for o in end_offsets(ctx, t, topic, PARTITIONS)]
    if failed or sum(ends) != n:
        raise RuntimeError(f"preload of {topic}: {failed} sends failed, the log holds {sum(ends)}, expected {n}")
    return ends


def consume_run(ctx: Ctx, t: Target, topic: str, ends: list[int]) -> Sample:
    """One Consumer per partition (from offset 0, its defaults: credit 8 MiB, responses <= 4 MiB), each in
    a thread, len() of every value; timed from the consumers' construction to the last record."""
    from tidelog.client import Consumer

    expect = sum(ends)
    counts = [[0, 0] for _ in ends]
    clock = Stopwatch(ctx.p.cap_s)
    errors: list[str] = []

    def read(p: int) -> None:
        n = nbytes = 0
        try:
            with Consumer(t.bootstrap, topic, partition=p, offset=0) as consumer:
                while n < ends[p] and not clock.expired(n, ends[p]):
                    for rec in consumer.poll(1.0):
                        nbytes += len(rec.value)
                        n += 1
        except Exception as exc:
            errors.append(f"partition {p}: {type(exc).__name__}: {exc}")
        counts[p] = [n, nbytes]

    threads = [threading.Thread(target=read, args=(p,), name=f"bench-consume-{p}") for p in range(len(ends))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    sample = clock.sample(sum(c[0] for c in counts), sum(c[1] for c in counts))
    if errors:
        raise RuntimeError("; ".join(errors))
    if not sample.capped and sample.records != expect:
        raise RuntimeError(f"consumed {sample.records:,} records of {topic}, expected {expect:,}")
    return sample


# -- 3. failover -----------------------------------------------------------------------------------------
class Traffic:
    """A producer sending acks=all one record at a time (linger 0) every `interval` seconds, each value its
    sequence number, with send and acknowledgement times; and a consumer following the leader, with the
    time each sequence number was first read."""

    def __init__(self, bootstrap: str, topic: str, interval_s: float) -> None:
        self.bootstrap, self.topic, self.interval_s = bootstrap, topic, interval_s
        self.t_send: list[float] = []
        self.t_ack: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.t_read: dict[int, float] = {}
        self.read_order: list[int] = []  # every record the live consumer returned, in order
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.stop_reading = threading.Event()
        self._threads = [
            threading.Thread(target=self._produce, name="bench-failover-producer"),
            threading.Thread(target=self._consume, name="bench-failover-consumer"),
        ]

    @staticmethod
    def value(seq: int) -> bytes:
        return b"seq-%012d-" % seq + b"x" * 80

    @staticmethod
    def seq(value: bytes) -> int:
        return int(value[4:16])

    def start(self) -> None:
        for th in self._threads:
            th.start()

    def _produce(self) -> None:
        from tidelog.client import Producer

        try:
            with Producer(self.bootstrap, acks="all", linger_ms=0) as producer:
                next_at = now()
                while not self.stop.is_set():
                    seq = len(self.t_send)
                    self.t_send.append(now())
                    producer.send(self.topic, self.value(seq), partition=0).add_done_callback(
                        lambda f, seq=seq: self._done(seq, f)
                    )
                    next_at += self.interval_s
                    time.sleep(max(next_at - now(), 0))
                producer.flush(180)
        except Exception as exc:
            self.errors.append(f"producer: {type(exc).__name__}: {exc}")

    def _done(self, seq: int, future) -> None:
        err = future.exception(0)
        if err is None:
            self.t_ack[seq] = now()
        else:
            self.failed[seq] = f"{type(err).__name__}: {err}"

    def _consume(self) -> None:
        from tidelog.client import Consumer

        try:
            with Consumer(self.bootstrap, self.topic, partition=0, offset=0, failover_s=120) as consumer:
                while not self.stop_reading.is_set():
                    for rec in consumer.poll(0.05):
                        seq = self.seq(rec.value)
                        self.read_order.append(seq)
                        self.t_read.setdefault(seq, now())
        except Exception as exc:
            self.errors.append(f"consumer: {type(exc).__name__}: {exc}")

    def first_after(self, t: float) -> int:
        """The first sequence number sent after t."""
        import bisect

        return bisect.bisect_right(self.t_send, t)

    def finish(self) -> None:
        self.stop.set()
        self._threads[0].join(240)

    def close(self) -> None:
        self.stop.set()
        self.stop_reading.set()
        for th in self._threads:
            th.join(240)


def leader_of(admin, topic: str) -> tuple[int | None, tuple]:
    part = admin.metadata([topic]).topics[0].partitions[0]
    return (part.leader_id if part.leader_address else None), tuple(part.isr)


def failover(ctx: Ctx) -> dict:
    """SIGKILL the partition's leader `kills` times under acks=all traffic; see the module's docstring."""
    p = ctx.p
    brokers = ctx.clusters["c3"]
    bootstrap = ctx.bootstrap("c3")
    t = Target(bootstrap, 3, "all", 2)
    topic = f"failover-{uuid.uuid4().hex[:8]}"
    create_topic(ctx, t, topic, 1)
    admin = ctx.admin(bootstrap)
    traffic = Traffic(bootstrap, topic, p.send_interval_s)
    traffic.start()
    kills: list[dict] = []
    try:
        wait_for(lambda: len(traffic.t_ack) >= 100 and len(traffic.t_read) >= 100, 30, "failover traffic to start")
        for k in range(p.kills):
            leader, isr = leader_of(admin, topic)
            time.sleep(0.5)  # steady traffic before the kill
            victim = brokers[leader - 1]
            t_kill = ctx.procs.kill(victim)
            first = traffic.first_after(t_kill)
            row: dict = {"kill": k + 1, "victim": leader, "isr_before": list(isr)}
            elected = None
            deadline = t_kill + p.failover_timeout_s
            while now() < deadline:
                acked = min(
                    (traffic.t_ack[s] for s in range(first, len(traffic.t_send)) if s in traffic.t_ack), default=None
                )
                read = min(
                    (traffic.t_read[s] for s in range(first, len(traffic.t_send)) if s in traffic.t_read), default=None
                )
                if elected is None:
                    with contextlib.suppress(Exception):
                        new, _ = leader_of(admin, topic)
                        if new is not None and new != leader:
                            elected, row["new_leader"] = now(), new
                if acked is not None and read is not None and elected is not None:
                    break
                time.sleep(0.02)
            row["kill_to_ack_s"] = None if acked is None else acked - t_kill
            row["kill_to_read_s"] = None if read is None else read - t_kill
            row["kill_to_new_leader_in_metadata_s"] = None if elected is None else elected - t_kill
            if acked is None or read is None:
                ctx.problem(
                    f"failover kill {k + 1}: no {'acknowledgement' if acked is None else 'read'} of a record sent "
                    f"after the kill within {p.failover_timeout_s:.0f} s (victim broker {leader}; see "
                    f"{victim.log_path} and the other brokers' logs)"
                )
            t_restart = now()
            brokers[leader - 1] = start_tidelog_again(ctx.procs, victim)
            try:
                wait_for(lambda: len(leader_of(admin, topic)[1]) == 3, p.isr_timeout_s, "a full ISR after the restart")
                row["restart_to_full_isr_s"] = now() - t_restart
            except TimeoutError as exc:
                row["restart_to_full_isr_s"] = None
                ctx.problem(f"failover kill {k + 1}: {exc}")
            log(
                f"  failover kill {k + 1}/{p.kills}: broker {leader} -> {row.get('new_leader')}: "
                + ", ".join(f"{key} {v:.3f}" for key, v in row.items() if key.endswith("_s") and v is not None)
            )
            kills.append(row)
        time.sleep(1.0)
        traffic.finish()
        verdict = verify_failover(ctx, traffic, t, topic)
    finally:
        traffic.close()
    if traffic.errors:
        for e in traffic.errors:
            ctx.problem(f"failover traffic: {e}")
    return {"topic": topic, "kills": kills, "check": verdict, "traffic_errors": traffic.errors}


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = now() + timeout_s
    last = None
    while now() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # e.g. metadata while a broker is down
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not reached within {timeout_s:.0f} s (last error: {last})")


def verify_failover(ctx: Ctx, traffic: Traffic, t: Target, topic: str) -> dict:
    """Read the whole partition from its leader: every acknowledged value exactly once?"""
    from tidelog.client import Consumer

    offsets = end_offsets(ctx, t, topic, 1)[0]
    in_log: list[int] = []
    with Consumer(t.bootstrap, topic, partition=0, offset=0) as consumer:
        deadline = now() + 120
        while (consumer.position or 0) < offsets.high_watermark and now() < deadline:
            in_log += [traffic.seq(r.value) for r in consumer.poll(1.0)]
    counts: dict[int, int] = {}
    for s in in_log:
        counts[s] = counts.get(s, 0) + 1
    acked = set(traffic.t_ack)
    lost = sorted(s for s in acked if s not in counts)
    dup_acked = sorted(s for s in acked if counts.get(s, 0) > 1)
    dup_any = sorted(s for s, c in counts.items() if c > 1)
    unacked_in_log = sorted(s for s in counts if s not in acked)
    read_live = set(traffic.read_order)
    out = {
        "sent": len(traffic.t_send),
        "acknowledged": len(acked),
        "failed": len(traffic.failed),
        "failures": sorted(set(traffic.failed.values()))[:10],
        "log_end": offsets.log_end,
        "high_watermark": offsets.high_watermark,
        "records_read_back": len(in_log),
        "lost_acknowledged": len(lost),
        "lost_sample": lost[:20],
        "duplicated_acknowledged": len(dup_acked),
        "duplicated_any": len(dup_any),
        "duplicated_sample": dup_any[:20],
        "unacknowledged_in_log": len(unacked_in_log),
        "live_consumer_read": len(traffic.read_order),
        "live_consumer_missed_acknowledged": len(acked - read_live),
        "live_consumer_repeats": len(traffic.read_order) - len(read_live),
        "in_order": in_log == sorted(in_log),
    }
    if lost:
        ctx.problem(f"failover: {len(lost)} ACKNOWLEDGED RECORDS LOST (sequence numbers {lost[:20]})")
    if dup_any:
        ctx.problem(f"failover: {len(dup_any)} records in the log more than once ({dup_any[:20]})")
    if out["live_consumer_missed_acknowledged"] or out["live_consumer_repeats"]:
        ctx.problem(
            f"failover: the live consumer missed {out['live_consumer_missed_acknowledged']} acknowledged records "
            f"and returned {out['live_consumer_repeats']} twice"
        )
    if not out["in_order"]:
        ctx.problem("failover: the log's sequence numbers are not in send order")
    return out


# -- 4. brokers per host ---------------------------------------------------------------------------------
_WORKER_VALUES: list[bytes] = []


def _worker_init(pool_batches: int, seed: int) -> None:
    from tidelog.tuning import tune_malloc

    tune_malloc()
    _WORKER_VALUES.extend(v for batch in make_pool(pool_batches, RECORD_BYTES, seed) for v in batch)


def _worker_produce(bootstrap: str, topic: str, partitions: int, n: int, cap_s: float, offset: int) -> dict:
    """One producer process: n records over every partition, then flush; timed after one record per
    partition was acknowledged. Returns its clock (CLOCK_MONOTONIC) and what was acknowledged."""
    from tidelog.client import Producer

    values, npool = _WORKER_VALUES, len(_WORKER_VALUES)
    with Producer(bootstrap, acks=1, linger_ms=LINGER_MS, batch_bytes=MiB) as producer:
        for p in range(partitions):
            producer.send(topic, values[p], partition=p).result(30)
        futures = []
        clock = Stopwatch(cap_s)
        t0 = now()
        for i in range(n):
            futures.append(producer.send(topic, values[(offset + i) % npool], partition=i % partitions))
            if not i & 1023 and clock.expired(i + 1, n):
                break
        producer.flush(cap_s + 120)
        t1 = now()
    failed = sum(f.exception(0) is not None for f in futures)
    return {"t0": t0, "t1": t1, "sent": len(futures), "acked": len(futures) - failed, "capped": clock.capped}


@dataclass
class ScalingSample(ProduceSample):
    leaders: dict = field(default_factory=dict)

    def details(self) -> dict:
        return {**super().details(), "partitions_led_per_broker": self.leaders}


def scaling_run(ctx: Ctx, system: str, pool, t: Target, topic: str) -> ScalingSample:
    parts = ctx.admin(t.bootstrap).metadata([topic]).topics[0].partitions
    leaders: dict = {}
    for part in parts:
        leaders[part.leader_id] = leaders.get(part.leader_id, 0) + 1
    n = ctx.p.scaling_records
    before = sum(o.log_end for o in end_offsets(ctx, t, topic, SCALING_PARTITIONS))
    args = [(t.bootstrap, topic, SCALING_PARTITIONS, n, ctx.p.cap_s, i * n) for i in range(SCALING_PRODUCERS)]
    results = pool.starmap(_worker_produce, args)
    acked = sum(r["acked"] for r in results)
    sent = sum(r["sent"] for r in results)
    seconds = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    after = sum(o.log_end for o in end_offsets(ctx, t, topic, SCALING_PARTITIONS))
    in_log = after - before - SCALING_PRODUCERS * SCALING_PARTITIONS  # less each producer's first records
    if sent != acked:
        ctx.note("brokers per host", system, f"{sent - acked:,} of {sent:,} sends failed (not counted)")
    if in_log != acked:
        ctx.note("brokers per host", system, f"MISMATCH: {acked:,} acknowledged but the log grew by {in_log:,}")
    return ScalingSample(
        acked,
        acked * RECORD_BYTES,
        seconds,
        any(r["capped"] for r in results),
        sent,
        sent - acked,
        in_log,
        {str(k): v for k, v in sorted(leaders.items())},
    )


# -- report ----------------------------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def failover_report(fo: dict) -> tuple[list[str], dict]:
    kills = fo["kills"]
    out = [
        "## Failover: SIGKILL of the partition's leader under acks=all traffic",
        "",
        f"broker_session_timeout_ms = {SESSION_MS} (the etcd lease TTL: {SESSION_MS // 1000} s); target: p50 and "
        f"max <= TTL + 2 s = {FAILOVER_TARGET_S:.1f} s. One partition, RF 3, min_insync_replicas 2; the "
        "producer sends one record every "
        f"{fo['interval_ms']:.0f} ms (linger 0, acks=all, idempotent); the consumer follows the leader.",
        "",
        "| measure (s after the SIGKILL) | p50 | max | min | kills measured |",
        "|---|---:|---:|---:|---:|",
    ]
    summary: dict = {}
    for key, label in (
        ("kill_to_ack_s", "first acknowledgement of a record sent after the kill"),
        ("kill_to_read_s", "consumer reads a record sent after the kill"),
        ("kill_to_new_leader_in_metadata_s", "new leader seen in Metadata (polled every ~20 ms)"),
        ("restart_to_full_isr_s", "restart of the killed broker -> ISR full again (s after restart)"),
    ):
        xs = [k[key] for k in kills if k.get(key) is not None]
        missing = len(kills) - len(xs)
        if xs:
            summary[key] = {"p50": pct(xs, 0.5), "max": max(xs), "min": min(xs), "n": len(xs), "missing": missing}
            out.append(
                f"| {label} | {pct(xs, 0.5):.2f} | {max(xs):.2f} | {min(xs):.2f} | {len(xs)} of {len(kills)}"
                f"{' (' + str(missing) + ' never)' if missing else ''} |"
            )
        else:
            summary[key] = {"n": 0, "missing": missing}
            out.append(f"| {label} | - | - | - | 0 of {len(kills)} |")
    c = fo["check"]
    verdict = "none lost" if not c["lost_acknowledged"] else f"**{c['lost_acknowledged']} LOST**"
    out += [
        "",
        "Every kill: "
        + "; ".join(
            f"#{k['kill']} broker {k['victim']}->{k.get('new_leader', '?')}: ack "
            + (f"{k['kill_to_ack_s']:.2f}" if k["kill_to_ack_s"] is not None else "never")
            + ", read "
            + (f"{k['kill_to_read_s']:.2f}" if k["kill_to_read_s"] is not None else "never")
            for k in kills
        ),
        "",
        f"Check after {len(kills)} kills (the whole partition read back from the final leader): "
        f"{c['sent']:,} records sent, {c['acknowledged']:,} acknowledged, {c['failed']:,} failed; the log holds "
        f"{c['records_read_back']:,} (end offset {c['log_end']:,}, high watermark {c['high_watermark']:,}); "
        f"acknowledged records: {verdict}, {c['duplicated_acknowledged']} duplicated; records in the log more than "
        f"once: {c['duplicated_any']}; unacknowledged records that reached the log: {c['unacknowledged_in_log']}; "
        f"in send order: {'yes' if c['in_order'] else 'NO'}; the live consumer read {c['live_consumer_read']:,} "
        f"records, missed {c['live_consumer_missed_acknowledged']} acknowledged, repeated "
        f"{c['live_consumer_repeats']}.",
    ]
    if c["failures"]:
        out.append(f"Send failures: {'; '.join(c['failures'])}")
    out.append("")
    return out, summary


def report(ctx: Ctx, rounds: Rounds, info: dict, settings: dict, fo: dict | None, elapsed: float):
    p = ctx.p
    out = [
        f"# tidelog cluster benchmark ({p.name}, {datetime.date.today().isoformat()})",
        "",
        "- " + machine_line(info, f"grpcio {info['grpcio']}", info.get("etcd", "etcd ?")),
        f"- malloc (benchmark and producer processes): {info['malloc']}; data under {info['tmp_dir']}",
        "- servers on 127.0.0.1, all on this host: `tidelog serve --fsync never` (the plain broker), and "
        f"clustered brokers (`--cluster etcd://... --broker-id N --config`, `--fsync never`, "
        f"broker_session_timeout_ms {SESSION_MS}, other replication settings at their defaults: "
        "replica_lag_time_max_ms 10000, replication_timeout_ms 10000, replica_fetch_wait_ms 500); one etcd 3.4 "
        "(`tidelog.cluster.etcd.server_command`) shared by the clusters of 1, 3 and 2 brokers under their own "
        "cluster names; all of them run for the whole section they serve, so idle brokers share the 2 cores",
        f"- records of exactly {RECORD_BYTES} B (seeded JSON-like payloads); produce: `Producer(bootstrap, acks, "
        f"linger_ms={LINGER_MS}, batch_bytes=1 MiB)` (idempotent, no compression) in the benchmark's process, "
        f"{p.records:,} records per run over {PARTITIONS} partitions (record i to partition i % 3), appended to "
        "one topic per system created beforehand and appended to by every run (the growth of its end offsets "
        "is checked against the acknowledgements); the plain broker and the cluster of 1 with acks=1; timed from after one record per partition "
        "was acknowledged to the end of flush(); only records whose futures succeeded count, and the end offsets "
        "are checked against them after every run",
        f"- medians of {p.runs} runs after {p.warmup} warm-up round(s), systems interleaved round by round; "
        "min - max across runs; ratios: ratio of the medians (min - max of the per-round ratios)",
        "",
    ]
    secs = [
        Section(
            "produce",
            "Produce 1 KiB, 3 partitions",
            ("records/s", "MB/s"),
            (Compare("/ cluster of 1 (RF 1)", None, S_RF1), Compare("/ single broker", None, S_SINGLE)),
        ),
        Section(
            "consume",
            "Consume from the leaders (one Consumer per partition, from offset 0)",
            ("records/s", "MB/s"),
            (Compare("/ single broker", None, C_SINGLE),),
        ),
    ]
    body, results = sections_report(rounds, secs, ctx.notes)
    out += body
    if "consume" in rounds.sections():
        out += [
            f"The consume data set: {p.records:,} records written once (untimed) like the acks=all runs above "
            "(RF 3, min_insync_replicas 2) and the same on the plain broker; each run reads all of it with 3 "
            "Consumers (one thread each, `poll()` + `len(rec.value)`), timed from their construction.",
            "",
        ]
    summary = None
    if fo is not None:
        fo_lines, summary = failover_report(fo)
        out += fo_lines
    secs4 = [
        Section(
            "brokers per host",
            f"Brokers per host: produce 1 KiB, RF 1, {SCALING_PARTITIONS} partitions, {SCALING_PRODUCERS} "
            "producer processes",
            ("records/s", "MB/s"),
            (Compare("/ 1 broker", None, B_ONE),),
        )
    ]
    body4, results4 = sections_report(rounds, secs4, ctx.notes)
    if body4:
        out += body4
        led = (
            [s.leaders for s in rounds.samples("brokers per host", B_TWO)]
            if rounds.has("brokers per host", B_TWO)
            else []
        )
        out += [
            f"A cluster of 1 vs a cluster of 2 brokers on this {os.cpu_count()}-core host, one topic each, created "
            f"beforehand (RF 1, {SCALING_PARTITIONS} partitions; partitions led per broker in the 2-broker runs: "
            f"{', '.join(str(x) for x in led) or '-'}); {SCALING_PRODUCERS} producer processes (spawned once), "
            f"each `Producer(acks=1, linger_ms={LINGER_MS}, batch_bytes=1 MiB)` sending {p.scaling_records:,} "
            "records round-robin over every partition; timed from the first producer's start (after one record "
            "per partition was acknowledged) to the last one's end of flush(); producers and brokers share the cores.",
            "",
        ]
        results["series"] += results4["series"]
        results["ratios"] += results4["ratios"]
    # targets
    targets = []
    r = rounds.paired("produce", S_ALL, S_RF1, "records/s")
    targets.append(("RF 3 acks=all / cluster RF 1 (produce records/s)", r and r["ratio"], ">=", RF3_TARGET, r))
    if summary:
        for key, label in (
            ("kill_to_ack_s", "failover: kill -> first new ack"),
            ("kill_to_read_s", "failover: kill -> consumer reads a new record"),
        ):
            s = summary.get(key, {})
            ok_all = s.get("n", 0) and not s.get("missing")
            for stat in ("p50", "max"):
                targets.append((f"{label}, {stat} (s)", s.get(stat) if ok_all else None, "<=", FAILOVER_TARGET_S, None))
        lost = fo["check"]["lost_acknowledged"]
        targets.append(("failover: acknowledged records lost", lost, "<=", 0, None))
    out += ["## Targets", "", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    results["targets"] = []
    for name, value, op, goal, pair in targets:
        if value is None:
            shown, met = "not measured" if pair is None and not summary else "not reached", None
        else:
            shown = fmt_ratio(pair) if pair else (f"{value:.2f}" if isinstance(value, float) else str(value))
            met = value >= goal if op == ">=" else value <= goal
        out.append(f"| {name} | {shown} | {op} {goal:g} | {'-' if met is None else 'yes' if met else 'NO'} |")
        results["targets"].append({"target": name, "measured": value, "op": op, "goal": goal, "met": met})
    out.append("")
    if ctx.problems:
        out += ["## PROBLEMS", ""] + [f"- {text}" for text in ctx.problems] + [""]
    else:
        out += [
            "No problems: every run's log held exactly the records acknowledged"
            + (", and no acknowledged record was lost or duplicated over the kills." if fo else "."),
            "",
        ]
    note = shared_machine_note(rounds.meter.sections)
    if note:
        out += [note, ""]
    out.append(f"Total benchmark time: {elapsed:.0f} s")
    results["elapsed_s"] = elapsed
    results["cpu"] = rounds.meter.sections
    results["failover_summary"] = summary
    return "\n".join(out), results


# -- main ------------------------------------------------------------------------------------------------
def run(profile: Profile, tmp_parent: str, parts: set[str], tuned: bool) -> tuple[str, dict]:
    import grpc

    info = machine_info(tmp_parent, tuned, grpcio=grpc.__version__)
    announce(info)
    started = now()
    settings = {
        "record_bytes": RECORD_BYTES,
        "partitions": PARTITIONS,
        "linger_ms": LINGER_MS,
        "batch_bytes": MiB,
        "broker_session_timeout_ms": SESSION_MS,
        "fsync": "never",
        "scaling_partitions": SCALING_PARTITIONS,
        "scaling_producers": SCALING_PRODUCERS,
        "parts": sorted(parts),
    }
    rounds = Rounds(profile.runs, profile.warmup)
    fo = None
    with workspace("tidelog-cluster-bench-", tmp_parent) as procs:
        ctx = Ctx(profile, procs)
        try:
            log("building payloads and starting the servers...")
            ctx.values = [v for batch in make_pool(profile.pool_batches, RECORD_BYTES, SEED) for v in batch]
            start_servers(ctx, parts)
            info["etcd"] = ctx.etcd.version.replace("etcd Version:", "etcd").strip()
            single = Target(ctx.single.target, None, 1) if ctx.single else None
            sections: dict = {}
            if "produce" in parts:
                c1, c3 = ctx.bootstrap("c1"), ctx.bootstrap("c3")
                systems = {
                    S_SINGLE: single,
                    S_RF1: Target(c1, 1, 1),
                    S_ACKS1: Target(c3, 3, 1, 2),
                    S_ALL: Target(c3, 3, "all", 2),
                }
                topics = {}
                for i, (s, t) in enumerate(systems.items()):
                    topics[s] = f"produce-{i}"
                    create_topic(ctx, t, topics[s], PARTITIONS)
                sections["produce"] = {
                    s: (lambda s=s, t=t: produce_run(ctx, s, t, topics[s])) for s, t in systems.items()
                }
            if "consume" in parts:
                rf3 = Target(ctx.bootstrap("c3"), 3, "all", 2)
                ends_single = preload(ctx, single, "consume", profile.records)
                ends_rf3 = preload(ctx, rf3, "consume", profile.records)
                log(f"  preloaded {profile.records:,} records on the plain broker and the cluster of 3 (untimed)")
                sections["consume"] = {
                    C_SINGLE: lambda: consume_run(ctx, single, "consume", ends_single),
                    C_RF3: lambda: consume_run(ctx, rf3, "consume", ends_rf3),
                }
            if sections:
                rounds.run(sections)
            if "failover" in parts:
                log(f"failover: {profile.kills} kills of the leader")
                # No CPU split for this section: the CPU of a killed broker leaves the process tree with it.
                fo = failover(ctx)
                fo["interval_ms"] = profile.send_interval_s * 1000
            if "scaling" in parts:
                for name in ("c3",):
                    if name in ctx.clusters:
                        stop_cluster(ctx, name)
                if ctx.single is not None:
                    procs.stop(ctx.single)
                    ctx.single = None
                start_named_cluster(ctx, "c2", 2)
                mp = multiprocessing.get_context("spawn")  # no fork after grpc threads exist here
                with mp.Pool(SCALING_PRODUCERS, _worker_init, (profile.pool_batches, SEED)) as pool:
                    targets = {B_ONE: Target(ctx.bootstrap("c1"), 1, 1), B_TWO: Target(ctx.bootstrap("c2"), 1, 1)}
                    for t in targets.values():
                        create_topic(ctx, t, "scaling", SCALING_PARTITIONS)
                    rounds.run(
                        {
                            "brokers per host": {
                                s: (lambda s=s, t=t: scaling_run(ctx, s, pool, t, "scaling"))
                                for s, t in targets.items()
                            }
                        }
                    )
                    pool.terminate()
            text, results = report(ctx, rounds, info, settings, fo, now() - started)
        except BaseException:
            ctx.problem("the benchmark stopped with an error")
            raise
        finally:
            ctx.close()
            if ctx.problems:
                keep_logs(procs, tmp_parent)
    return text, {
        "date": datetime.date.today().isoformat(),
        "machine": info,
        "profile": dataclasses.asdict(profile),
        "settings": settings,
        "failover": fo,
        "problems": ctx.problems,
        "notes": {f"{k[0]} / {k[1]}": v for k, v in ctx.notes.items()},
        **results,
    }


def keep_logs(procs: Processes, tmp_parent: str) -> None:
    """Something went wrong: copy every server's log out of the workspace (which is removed) first."""
    import shutil

    dest = os.path.join(tmp_parent, f"tidelog-cluster-bench-logs-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(procs.tmp):
        if name.endswith(".log"):
            shutil.copy(os.path.join(procs.tmp, name), dest)
    log(f"server logs kept in {dest}")


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("python -m benchmarks.cluster_bench", __doc__, "100k records, 3 runs, 3 kills (under ~3 minutes)")
    ap.add_argument(
        "--only", default=",".join(sorted(PARTS)), help="comma-separated subset of: " + ", ".join(sorted(PARTS))
    )
    ap.add_argument("--kills", type=int, help="leader kills in the failover section (default 12, or 3 with --quick)")
    ap.add_argument(
        "--out", default=RESULTS_DIR, help="where <date>-cluster[-quick].{md,json} go (default benchmarks/results)"
    )
    ap.add_argument("--default-malloc", action="store_true", help="skip the glibc mallopt tuning our entry points use")
    args = ap.parse_args(argv)
    profile = cli.profile(ap, args, QUICK, DEFAULT)
    if args.kills is not None:
        if args.kills < 1:
            ap.error("--kills must be at least 1")
        profile = dataclasses.replace(profile, kills=args.kills)
    parts = cli.subset(ap, "--only", args.only, PARTS)
    os.makedirs(args.tmp, exist_ok=True)
    cli.unwind_on_signals()
    from tidelog.tuning import tune_malloc

    tuned = False if args.default_malloc else tune_malloc()
    try:
        text, doc = run(profile, os.path.abspath(args.tmp), parts, tuned)
    except KeyboardInterrupt:
        return cli.interrupted()
    except Unavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{doc['date']}-cluster{'-quick' if args.quick else ''}")
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    cli.write_json(stem + ".json", doc)
    log(f"wrote {stem}.md")
    cli.finish(text, args.json, doc)
    return 1 if doc["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
