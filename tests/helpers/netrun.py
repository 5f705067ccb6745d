"""The cluster-under-network-faults run shared by tests/test_cluster_netfaults.py and
tests/test_cluster_netpartitions.py: one partition (rf 3, min_insync_replicas 2) on a NetCluster, a
producer (acks=all) and a consumer thread in the test process logging every operation to a History;
`finish()` heals, waits for a full ISR, dumps every replica and runs the history checker."""

from __future__ import annotations

import contextlib
import random
import threading
import time

from tidelog.errors import TidelogError

from .cluster import Settings, dump
from .history import History, check
from .netns import NetCluster

TOPIC = "net"
SESSION_MS = 2000
LAG_MS = 2000


class Attempt:
    __slots__ = ("value", "broker", "t_invoke", "t_done", "status", "code", "error")

    def __init__(self, value: bytes, broker: int | None, t_invoke: float) -> None:
        self.value, self.broker, self.t_invoke = value, broker, t_invoke
        self.t_done = 0.0
        self.status, self.code, self.error = "pending", 0, ""

    def __repr__(self) -> str:
        return f"{self.value!r}@b{self.broker} [{self.t_invoke:.2f}..{self.t_done:.2f}] {self.status} {self.code} {self.error}"


class Run:
    """One partition (rf 3, min_insync_replicas 2) on a NetCluster; a producer (acks=all) and a
    consumer thread in the test process; every attempt logged in the History and, with which broker
    answered and when (time.monotonic()), in `attempts`."""

    def __init__(
        self, net, tmp_path, settings: Settings | None = None, min_isr: int = 2, etcd_members: int = 1
    ) -> None:
        self.seed = random.randrange(1, 1 << 30)
        print(f"seed={self.seed} namespaces={net.tag}* subnet={net.subnet}")
        self.rng = random.Random(self.seed)
        self.settings = settings or Settings(session_ms=SESSION_MS, lag_ms=LAG_MS, replication_timeout_ms=3000)
        self.cluster = NetCluster(net, str(tmp_path), 3, self.settings, etcd_members=etcd_members)
        self.net = net
        self.history = History()
        self.attempts: list[Attempt] = []
        self.avoid: set[int] = set()
        """Brokers not to ask for metadata (cut off: their view is stale, or they do not answer)."""
        self.min_isr = min_isr
        self.via: dict[str, str] = {}
        """Broker address -> the address the producer sends to instead (a DelayProxy's)."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- metadata from the brokers the test can trust ----------------------------------------------------
    def meta(self, timeout_s: float = 1.5):
        from tidelog.v1 import tidelog_pb2 as pb

        order = [i for i in self.cluster.ids if i not in self.avoid] or list(self.cluster.ids)
        last: Exception | None = None
        for i in order:
            try:
                reply = self.cluster.call(
                    self.cluster.brokers[i].target, "Admin", "Metadata", pb.MetadataRequest(topics=[TOPIC]), timeout_s
                )
                return reply.topics[0].partitions[0]
            except TidelogError as exc:
                last = exc
        raise last or RuntimeError("no broker")

    def wait(self, predicate, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(TidelogError):
                last = predicate()
                if last:
                    return last
            time.sleep(0.1)
        what = what() if callable(what) else what
        raise AssertionError(f"seed={self.seed}: {what}: not reached in {timeout_s} s (last: {last})")

    def meta_of(self, broker: int, timeout_s: float = 1.5):
        from tidelog.v1 import tidelog_pb2 as pb

        target = self.cluster.brokers[broker].target
        request = pb.MetadataRequest(topics=[TOPIC])
        return self.cluster.call(target, "Admin", "Metadata", request, timeout_s).topics[0].partitions[0]

    def views(self) -> str:
        """What each broker says of the partition (leader, epoch, ISR), for the log."""
        out = []
        for i in self.cluster.ids:
            try:
                m = self.meta_of(i)
                out.append(f"b{i}: leader {m.leader_id} epoch {m.leader_epoch} isr {list(m.isr)}")
            except TidelogError as exc:
                out.append(f"b{i}: {type(exc).__name__}")
        return "; ".join(out)

    def wait_isr(self, size: int, timeout_s: float = 60, everyone: bool = False):
        """Until the partition has a leader and an ISR of `size`, as the brokers not avoided say (or,
        with everyone, every broker alike: a broker back from a cut may tell its old view a while)."""

        def agreed():
            seen = [self.meta_of(i) for i in self.cluster.ids] if everyone else [self.meta()]
            views = {(m.leader_id, m.leader_epoch, tuple(sorted(m.isr))) for m in seen}
            m = seen[0]
            return len(views) == 1 and m.leader_id > 0 and len(m.isr) == size and m

        return self.wait(agreed, timeout_s, lambda: f"an ISR of {size} ({self.views()})")

    def acked(self, broker: int | None = None, after: float = 0.0) -> list[Attempt]:
        return [
            a for a in list(self.attempts) if a.status == "ok" and a.t_invoke >= after and broker in (None, a.broker)
        ]

    def wait_acks(self, n: int, timeout_s: float = 60, broker: int | None = None, after: float | None = None):
        after = time.monotonic() if after is None else after
        self.wait(lambda: len(self.acked(broker, after)) >= n, timeout_s, f"{n} acks (broker {broker})")

    # -- the clients -------------------------------------------------------------------------------------
    def _send(self, value: bytes, leader: tuple[int, str] | None) -> str:
        from tidelog.v1 import tidelog_pb2 as pb

        op = self.history.send_invoke("p", TOPIC, 0, value)
        attempt = Attempt(value, leader[0] if leader else None, time.monotonic())
        self.attempts.append(attempt)
        try:
            if leader is None:
                raise TidelogError("no leader known")
            request = pb.ProduceRecordsRequest(
                topic=TOPIC, partition=0, records=[pb.Record(value=value)], acks=pb.ACKS_ALL
            )
            target = self.via.get(leader[1], leader[1])
            reply = self.cluster.call(target, "Producer", "ProduceRecords", request, timeout_s=4)
        except TidelogError as exc:
            attempt.t_done = time.monotonic()
            attempt.code, attempt.error = exc.code, f"{type(exc).__name__}: {exc.message}"
            definite = exc.code in (6, 19) or leader is None  # refused before appending
            attempt.status = "fail" if definite else "info"
            (self.history.send_fail if definite else self.history.send_info)(op, attempt.error)
            return attempt.status
        attempt.t_done = time.monotonic()
        attempt.status = "ok"
        self.history.send_ok(op, reply.results[0].base_offset)
        return "ok"

    def _leader(self) -> tuple[int, str] | None:
        try:
            m = self.meta()
        except TidelogError:
            return None
        return (m.leader_id, m.leader_address) if m.leader_address else None

    def _produce(self) -> None:
        leader, n = self._leader(), 0
        while not self._stop.is_set():
            n += 1
            if self._send(b"p-%d" % n, leader) != "ok":
                time.sleep(0.05)
                leader = self._leader()

    def _consume(self) -> None:
        leaders: dict[int, str] = {}
        offset = 0
        while not self._stop.is_set():
            if 0 not in leaders:
                found = self._leader()
                if found is None:
                    time.sleep(0.1)
                    continue
                leaders[0] = found[1]
            offset = self.cluster.poll(self.history, "c", TOPIC, 0, offset, leaders)

    def start(self):
        self.cluster.start()
        self.cluster.create_topic(TOPIC, partitions=1, rf=3, min_isr=self.min_isr)
        meta = self.wait_isr(3)
        self._threads = [threading.Thread(target=self._produce), threading.Thread(target=self._consume)]
        for t in self._threads:
            t.start()
        self.wait_acks(30)
        return meta

    def finish(self):
        """Heal, wait for a full ISR and more acks, stop everything, dump and check; the Report."""
        self.net.heal()
        self.avoid.clear()
        print(f"healed; the brokers say: {self.views()}")
        try:
            self.wait_isr(3, timeout_s=90, everyone=True)
            self.wait_acks(30)
        finally:
            self._stop.set()
            for t in self._threads:
                t.join(timeout=30)
        final = self.wait_isr(3, timeout_s=30, everyone=True)
        time.sleep(0.5)  # the followers fetch the last records
        self.cluster.stop()
        logs = {b: dump(self.cluster.data_dir(b), TOPIC, 1).get(0, []) for b in self.cluster.ids}
        in_sync = {(TOPIC, 0): set(final.isr)}
        committed = {(TOPIC, 0): min(len(logs[b]) for b in final.isr)}
        report = check(self.history, {(TOPIC, 0): logs}, committed, in_sync)
        print(f"seed={self.seed}: {report}")
        return report

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.cluster.stop()

    def logs(self) -> str:
        out = []
        for i, b in self.cluster.brokers.items():
            with contextlib.suppress(OSError):
                out.append(f"--- broker {i} ({b.log_path})\n{b.log()[-3000:]}")
        return "\n".join(out)


@contextlib.contextmanager
def scenario(net, tmp_path, **kw):
    run = Run(net, tmp_path, **kw)
    try:
        yield run
    except BaseException:
        print(run.logs())
        raise
    finally:
        run.close()


def probe_produce(run: Run, broker: int) -> str:
    """What one acks=all produce sent to `broker` is answered (for the log)."""
    from tidelog.v1 import tidelog_pb2 as pb

    value = b"probe-%d" % time.monotonic_ns()
    op = run.history.send_invoke("probe", TOPIC, 0, value)
    request = pb.ProduceRecordsRequest(topic=TOPIC, partition=0, records=[pb.Record(value=value)], acks=pb.ACKS_ALL)
    try:
        reply = run.cluster.call(run.cluster.brokers[broker].target, "Producer", "ProduceRecords", request, 4)
    except TidelogError as exc:
        (run.history.send_fail if exc.code in (6, 19) else run.history.send_info)(op, str(exc))
        return f"{type(exc).__name__} (code {exc.code}): {exc.message}"
    run.history.send_ok(op, reply.results[0].base_offset)
    return f"acknowledged at offset {reply.results[0].base_offset}"
