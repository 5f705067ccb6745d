"""Network chaos: a seeded schedule of network, process and clock faults on a cluster of three brokers
and three etcd members, each in a network namespace of its own (tests/helpers/netns.py; needs root),
under load, with every operation logged to a History and checked at the end.

    python -m benchmarks.net_chaos --faults 200 [--seed S] [--out benchmarks/results/DATE-net-chaos.json]

Load: the Python Producer (tidelog.client, acks=all, idempotent: the retries and routing users get)
sends to the three partitions (rf 3, min_insync_replicas 2) of one topic; a GroupConsumer (group
"net-chaos", auto-commit every second) reads them. Faults, one at a time, each held a random time and
healed, then every ISR must be full again (as every broker says) before the next:

- leader-isolated, follower-isolated: a broker's link down;
- controller-isolated: the controller's link down, or the controller cut from every etcd member;
- leader-etcd-cut: a partition leader cut from every etcd member (clients and followers still reach it);
- asymmetric-drop: a leader's packets to one follower dropped, or the reverse;
- minority-partition: {a partition leader, one etcd member} cut from {the other brokers, the other etcd
  members} (the clients reach both sides);
- etcd-member-killed (SIGKILL, restarted at the heal), etcd-member-isolated (its link down);
- rate-limit: a token bucket (256 kbit/s) on a leader's or a follower's link;
- clock-jump: a broker's lease clock 30 s ahead or behind (TIDELOG_TEST_CLOCK_FILE), put back at the heal;
- broker-kill: SIGKILL of a broker, restarted at the heal;
- broker-wipe: SIGKILL of a broker, its data directory emptied (a replaced disk), restarted at the heal:
  it must not lead or count as in sync before it has copied everything back.

Figures: faults per kind; records acknowledged; anomalies (the history checker: must be 0); per kind,
the longest time from the fault (and from its heal) to the first acknowledgement of a record sent after
it, on the partition that took longest; the longest pause between two acknowledgements of a partition
(producer) and between two deliveries to the group (consumer); records delivered to the group more
than once (at-least-once: allowed) and acknowledged records never delivered to it (must be 0).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

TOPIC = "chaos"
PARTITIONS = 3
GROUP = "net-chaos"
SESSION_MS = 2000
SEND_INTERVAL_S = 0.005  # about 200 records a second: the machine is small and shared
KINDS = (
    "leader-isolated",
    "follower-isolated",
    "controller-isolated",
    "leader-etcd-cut",
    "asymmetric-drop",
    "minority-partition",
    "etcd-member-killed",
    "etcd-member-isolated",
    "rate-limit",
    "clock-jump",
    "broker-kill",
    "broker-wipe",
)
SETTLE_TIMEOUT_S = 90


class Load:
    """The producer and the group consumer threads, logging to `history`."""

    def __init__(self, cluster, history) -> None:
        from tidelog.client import Producer

        self.cluster, self.history = cluster, history
        self.targets = [b.target for b in cluster.brokers.values()]
        self.producer = Producer(self.targets, acks="all", linger_ms=5, delivery_timeout_s=30)
        self.stop = threading.Event()  # the producer's
        self.stop_consumer = threading.Event()
        self.acked = 0
        self.delivered: collections.Counter = collections.Counter()  # value -> times delivered to the group
        self.deliveries: list[tuple[float, int]] = []  # (when, partition) of every delivered record
        self.consumer_restarts = 0
        self.consumer_errors: collections.Counter = collections.Counter()
        self.threads = [threading.Thread(target=self._produce, name="produce"), threading.Thread(target=self._consume)]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def _produce(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            partition = n % PARTITIONS
            value = b"p-%d" % n
            op = self.history.send_invoke("p", TOPIC, partition, value)
            try:
                future = self.producer.send(TOPIC, value, partition=partition)
            except Exception as exc:  # blocked past max_block_s: nothing was queued
                self.history.send_fail(op, f"{type(exc).__name__}: {exc}")
                continue
            future.add_done_callback(lambda f, op=op: self._done(op, f))
            time.sleep(SEND_INTERVAL_S)

    def _done(self, op: int, future) -> None:
        error = future.exception(0)
        if error is None:
            self.history.send_ok(op, future.result(0).offset)
            self.acked += 1
        else:  # after the producer's own retries: it may or may not have been appended
            self.history.send_info(op, f"{type(error).__name__}: {error}")

    def _consume(self) -> None:
        from tidelog.client import GroupConsumer

        consumer = None
        last: dict[int, int] = {}
        while not self.stop_consumer.is_set():
            try:
                if consumer is None:
                    consumer = GroupConsumer(
                        self.targets, GROUP, [TOPIC], auto_commit_interval_ms=1000, session_timeout_ms=6000
                    )
                records = consumer.poll(0.5)
            except Exception as exc:  # the member could not reach the group: a new one starts over
                self.consumer_errors[type(exc).__name__] += 1
                with contextlib.suppress(Exception):
                    consumer.close() if consumer is not None else None
                consumer = None
                self.consumer_restarts += 1
                time.sleep(0.2)
                continue
            now = time.monotonic()
            by_partition: dict[int, list[tuple[int, bytes]]] = collections.defaultdict(list)
            for r in records:
                by_partition[r.partition].append((r.offset, r.value))
            for partition, got in by_partition.items():
                if got[0][0] <= last.get(partition, -1):  # handed to the group again from its commit
                    self.history.poll_reset("g", TOPIC, partition)
                self.history.poll_ok("g", TOPIC, partition, got)
                last[partition] = got[-1][0]
                for _, value in got:
                    self.delivered[value] += 1
                    self.deliveries.append((now, partition))
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()

    def finish(self) -> None:
        self.stop.set()
        self.stop_consumer.set()
        for t in self.threads:
            t.join(timeout=60)
        with contextlib.suppress(Exception):
            self.producer.close(timeout_s=40)


class Chaos:
    def __init__(self, net, directory: str, seed: int) -> None:
        from tests.helpers.cluster import Settings
        from tests.helpers.history import History
        from tests.helpers.netns import NetCluster

        self.net, self.seed, self.rng = net, seed, random.Random(seed)
        settings = Settings(session_ms=SESSION_MS, lag_ms=2000, replication_timeout_ms=3000)
        self.cluster = NetCluster(net, directory, 3, settings, etcd_members=3)
        self.history = History()
        self.faults: list[dict] = []
        self.settle_failures: list[str] = []

    # -- views of the cluster ------------------------------------------------------------------------
    def meta_of(self, broker: int, timeout_s: float = 1.5):
        from tidelog.v1 import tidelog_pb2 as pb

        target = self.cluster.brokers[broker].target
        reply = self.cluster.call(target, "Admin", "Metadata", pb.MetadataRequest(topics=[TOPIC]), timeout_s)
        return {p.partition: p for p in reply.topics[0].partitions}

    def settled(self):
        """Every partition led and with a full ISR, every broker saying the same (else None)."""
        from tidelog.errors import TidelogError

        try:
            views = [self.meta_of(b) for b in self.cluster.ids]
        except TidelogError:
            return None
        shapes = {tuple((p, m.leader_id, tuple(sorted(m.isr))) for p, m in sorted(v.items())) for v in views}
        first = views[0]
        ok = len(shapes) == 1 and len(first) == PARTITIONS
        return first if ok and all(m.leader_id > 0 and len(m.isr) == 3 for m in first.values()) else None

    def wait_settled(self, timeout_s: float = SETTLE_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.settled()
            if found:
                return found
            time.sleep(0.2)
        return None

    def controller(self) -> int:
        from tidelog.v1 import tidelog_pb2 as pb

        return self.cluster.any_call("Admin", "DescribeCluster", pb.DescribeClusterRequest(), 3).controller_id

    # -- one fault -------------------------------------------------------------------------------------
    def inject(self, kind: str, meta) -> tuple[str, object]:
        """Put the fault in place; (what was done, how to heal it)."""
        net, cluster, rng = self.net, self.cluster, self.rng
        part = rng.randrange(PARTITIONS)
        leader = meta[part].leader_id
        follower = rng.choice([b for b in meta[part].replicas if b != leader])
        etcds = cluster.etcd_nodes
        if kind == "leader-isolated" or kind == "follower-isolated":
            b = leader if kind == "leader-isolated" else follower
            net.link_down(f"b{b}")
            return f"b{b} link down", lambda: net.link_up(f"b{b}")
        if kind == "controller-isolated":
            c = self.controller()
            if rng.random() < 0.5:
                net.link_down(f"b{c}")
                return f"controller b{c} link down", lambda: net.link_up(f"b{c}")
            net.isolate(f"b{c}", etcds)
            return f"controller b{c} cut from etcd", net.heal_drops
        if kind == "leader-etcd-cut":
            net.isolate(f"b{leader}", etcds)
            return f"b{leader} (leads {part}) cut from etcd", net.heal_drops
        if kind == "asymmetric-drop":
            src, dst = (leader, follower) if rng.random() < 0.5 else (follower, leader)
            net.drop(f"b{src}", f"b{dst}")
            return f"b{src} -> b{dst} dropped (leader b{leader})", net.heal_drops
        if kind == "minority-partition":
            e = rng.choice(etcds)
            minority = [f"b{leader}", e]
            majority = [f"b{b}" for b in cluster.ids if b != leader] + [m for m in etcds if m != e]
            for a in minority:
                net.isolate(a, majority)
            return f"{{b{leader}, {e}}} | {{{', '.join(majority)}}}", net.heal_drops
        if kind == "etcd-member-killed":
            m = cluster.etcd.member(rng.choice(etcds))
            m.kill()
            return f"{m.node.name} SIGKILL", m.restart
        if kind == "etcd-member-isolated":
            e = rng.choice(etcds)
            net.link_down(e)
            return f"{e} link down", lambda: net.link_up(e)
        if kind == "rate-limit":
            b = leader if rng.random() < 0.5 else follower
            net.rate_limit(f"b{b}", "256kbit")
            return f"b{b} at 256 kbit/s ({'leader' if b == leader else 'follower'})", lambda: net.unrate(f"b{b}")
        if kind == "clock-jump":
            b = leader if rng.random() < 0.7 else follower
            offset = rng.choice((30, -30))
            cluster.jump_clock(b, offset)
            return f"b{b} lease clock {offset:+d} s", lambda: cluster.jump_clock(b, 0)
        if kind == "broker-kill":
            b = leader if rng.random() < 0.7 else follower
            cluster.kill(b)
            return f"b{b} SIGKILL", lambda: cluster.restart(b)
        if kind == "broker-wipe":
            b = leader if rng.random() < 0.5 else follower
            cluster.kill(b)
            shutil.rmtree(cluster.data_dir(b))
            return f"b{b} SIGKILL, data directory emptied", lambda: cluster.restart(b)
        raise ValueError(kind)

    def run(self, faults: int, hold_s: tuple[float, float], log) -> None:
        meta = self.wait_settled()
        if meta is None:
            raise RuntimeError("the cluster did not settle before the first fault")
        for i in range(faults):
            kind = self.rng.choice(KINDS)
            what, heal = self.inject(kind, meta)
            t_fault = time.monotonic()
            hold = self.rng.uniform(*hold_s)
            time.sleep(hold)
            heal()
            t_heal = time.monotonic()
            meta = self.wait_settled()
            t_settled = time.monotonic()
            fault = {
                "i": i,
                "kind": kind,
                "what": what,
                "t_fault": t_fault - self.history.start,
                "hold_s": round(hold, 2),
                "t_heal": t_heal - self.history.start,
                "settled_s": round(t_settled - t_heal, 2) if meta else None,
            }
            self.faults.append(fault)
            log(f"fault {i}: {kind}: {what}, held {hold:.1f} s, settled {fault['settled_s']} s after the heal")
            if meta is None:
                self.settle_failures.append(f"fault {i} ({kind}: {what}): no full ISRs {SETTLE_TIMEOUT_S} s after")
                log(f"  NOT SETTLED: {self.settle_failures[-1]}")
                meta = self.wait_settled(300)
                if meta is None:
                    raise RuntimeError(f"the cluster never settled after fault {i} ({kind}: {what})")


def first_ack_after(sends, t: float) -> float | None:
    """Seconds from t to the first acknowledgement of a record sent after t, on the partition that took
    longest (None when a partition had none)."""
    worst = 0.0
    for p in range(PARTITIONS):
        done = [s.t_done for s in sends[p] if s.t_invoke >= t]
        if not done:
            return None
        worst = max(worst, min(done) - t)
    return worst


def longest_gap(times: list[float]) -> float:
    times = sorted(times)
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def run(directory: str, faults: int, seed: int = 0, hold_s=(1.0, 5.0), log=print) -> dict:
    """The whole run; the figures (a dict, as written to the results JSON)."""
    from tests.helpers.cluster import dump
    from tests.helpers.history import check
    from tests.helpers.netns import network
    from tidelog.v1 import tidelog_pb2 as pb

    seed = seed or random.randrange(1, 1 << 30)
    log(f"net chaos: seed={seed} faults={faults}")
    started = time.monotonic()
    with network() as net:
        chaos = Chaos(net, directory, seed)
        cluster = chaos.cluster
        load = None
        try:
            cluster.start()
            cluster.any_call(
                "Admin",
                "CreateTopic",
                pb.CreateTopicRequest(
                    name=TOPIC, partitions=PARTITIONS, replication_factor=3, config={"min_insync_replicas": "2"}
                ),
            )
            if chaos.wait_settled(60) is None:
                raise RuntimeError("the topic never had full ISRs")
            load = Load(cluster, chaos.history).start()
            chaos.run(faults, hold_s, log)
            # the end: everything healed and settled; let the group catch up on every acknowledged record
            settled_acks = load.acked
            deadline = time.monotonic() + 60
            while load.acked < settled_acks + 100 and time.monotonic() < deadline:
                time.sleep(0.2)
            load.stop.set()
            load.threads[0].join(timeout=60)
            with contextlib.suppress(Exception):
                load.producer.flush(timeout_s=40)
            acked_values = {s.value for s in chaos.history.sends if s.status == "ok"}
            deadline = time.monotonic() + 60
            while any(v not in load.delivered for v in acked_values) and time.monotonic() < deadline:
                time.sleep(0.5)
            load.stop_consumer.set()
            load.threads[1].join(timeout=60)
        finally:
            if load is not None:
                load.finish()
        final = chaos.wait_settled(60) or chaos.meta_of(cluster.ids[0])
        time.sleep(0.5)
        cluster.stop()
        logs = {b: dump(cluster.data_dir(b), TOPIC, PARTITIONS) for b in cluster.ids}
    replica_logs = {(TOPIC, p): {b: logs[b].get(p, []) for b in cluster.ids} for p in range(PARTITIONS)}
    in_sync = {(TOPIC, p): set(final[p].isr) for p in range(PARTITIONS)}
    committed = {k: min(len(replica_logs[k][b]) for b in in_sync[k]) for k in replica_logs}
    report = check(chaos.history, replica_logs, committed, in_sync)
    log(f"net chaos seed={seed}: {report}")

    sends_by_p: dict[int, list] = collections.defaultdict(list)
    for s in chaos.history.sends:
        if s.status == "ok":
            sends_by_p[s.partition].append(s)
    per_kind: dict[str, dict] = {}
    for f in chaos.faults:
        from_fault = first_ack_after(sends_by_p, f["t_fault"] + chaos.history.start)
        from_heal = first_ack_after(sends_by_p, f["t_heal"] + chaos.history.start)
        f["unavailable_from_fault_s"] = None if from_fault is None else round(from_fault, 2)
        f["unavailable_from_heal_s"] = None if from_heal is None else round(from_heal, 2)
        k = per_kind.setdefault(f["kind"], {"faults": 0, "from_fault_s": 0.0, "from_heal_s": 0.0, "settle_s": 0.0})
        k["faults"] += 1
        k["from_fault_s"] = round(max(k["from_fault_s"], from_fault if from_fault is not None else float("inf")), 2)
        k["from_heal_s"] = round(max(k["from_heal_s"], from_heal if from_heal is not None else float("inf")), 2)
        k["settle_s"] = round(max(k["settle_s"], f["settled_s"] if f["settled_s"] is not None else float("inf")), 2)
    acked_values = {s.value for s in chaos.history.sends if s.status == "ok"}
    never_delivered = sorted(v.decode() for v in acked_values if v not in load.delivered) if load else []
    deliveries_by_p = collections.defaultdict(list)
    for t, p in load.deliveries if load else []:
        deliveries_by_p[p].append(t)
    figures = {
        "date": datetime.date.today().isoformat(),
        "seed": seed,
        "faults": len(chaos.faults),
        "faults_per_kind": dict(collections.Counter(f["kind"] for f in chaos.faults)),
        "acknowledged": report.acknowledged,
        "indeterminate": report.indeterminate,
        "anomalies": len(report.anomalies),
        "anomaly_kinds": dict(report.kinds),
        "anomaly_examples": [str(a) for a in report.anomalies[:20]],
        "not_settled": chaos.settle_failures,
        "per_kind": per_kind,
        "producer_longest_pause_s": round(
            max((longest_gap([s.t_done for s in v]) for v in sends_by_p.values()), default=0), 2
        ),
        "consumer_longest_pause_s": round(max((longest_gap(v) for v in deliveries_by_p.values()), default=0), 2),
        "group_deliveries": sum(load.delivered.values()) if load else 0,
        "group_reprocessed": sum(n - 1 for n in load.delivered.values()) if load else 0,
        "group_never_delivered": len(never_delivered),
        "group_never_delivered_examples": never_delivered[:20],
        "group_consumer_restarts": load.consumer_restarts if load else 0,
        "group_consumer_errors": dict(load.consumer_errors) if load else {},
        "duration_s": round(time.monotonic() - started, 1),
        "settings": {"session_ms": SESSION_MS, "lag_ms": 2000, "replication_timeout_ms": 3000, "hold_s": list(hold_s)},
        "fault_log": chaos.faults,
        "report": str(report),
    }
    return figures


def markdown(figures: dict) -> str:
    """The figures as docs/RELIABILITY.md shows them."""
    lines = [
        f"Seed {figures['seed']}, {figures['faults']} faults in {figures['duration_s'] / 60:.0f} min: "
        f"**{figures['acknowledged']:,} acknowledged, {figures['anomalies']} anomalies** "
        f"({figures['indeterminate']} indeterminate), {figures['group_never_delivered']} acknowledged records "
        f"never delivered to the group, {figures['group_reprocessed']} delivered again "
        f"({figures['group_deliveries']:,} deliveries); longest pause between two acknowledgements of a "
        f"partition {figures['producer_longest_pause_s']} s, between two deliveries of a partition to the group "
        f"{figures['consumer_longest_pause_s']} s.",
        "",
        "| Fault | Injected | Fault → first ack (longest) | Heal → first ack (longest) | Heal → full ISRs (longest) |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        k = figures["per_kind"].get(kind)
        if k:
            lines.append(
                f"| {kind} | {k['faults']} | {k['from_fault_s']} s | {k['from_heal_s']} s | {k['settle_s']} s |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.net_chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--faults", type=int, default=200, help="faults to inject (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="the schedule's seed (default: a random one, printed)")
    ap.add_argument("--out", help="the results JSON (default benchmarks/results/<date>-net-chaos.json)")
    ap.add_argument("--tmp", default="/tmp", help="parent of the temporary data (default /tmp)")
    args = ap.parse_args(argv)
    if args.faults < 1:
        ap.error("--faults must be at least 1")
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", f"{datetime.date.today().isoformat()}-net-chaos.json"
    )
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="net-chaos-") as directory:
        figures = run(directory, args.faults, args.seed, log=lambda m: print(m, flush=True))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(figures, f, indent=1)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(markdown(figures))
    summary = {k: v for k, v in figures.items() if k not in ("fault_log", "report", "anomaly_examples")}
    print(json.dumps(summary, indent=1))
    print(f"results: {out}")
    bad = figures["anomalies"] or figures["group_never_delivered"] or figures["not_settled"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
