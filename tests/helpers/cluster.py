"""A real tidelog cluster for the tests: one etcd and N `tidelog serve --cluster` processes on 127.0.0.1,
each stopped by PID; plus a small raw client (Metadata, ProduceRecords to the leader, FetchRecords)
that records every operation in a History, and a dump of every replica's log read from its data
directory once the brokers are stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass

import grpc
import numpy as np

from tidelog.codec.batch import BatchView
from tidelog.errors import TidelogError
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import methods
from tidelog.wire.statuses import error_from_rpc

from ..server_process import ServerProcess
from .etcd import EtcdProcess
from .history import History

ACKS = {"all": pb.ACKS_ALL, "1": pb.ACKS_LEADER, "leader": pb.ACKS_LEADER, "none": pb.ACKS_NONE}


@dataclass
class Settings:
    session_ms: int = 1000
    lag_ms: int = 4000
    replication_timeout_ms: int = 5000
    group_delay_ms: int = 200
    """group_initial_rebalance_delay_ms: a new group's first assignment waits this long (the broker's
    default, 3 s, is a pause before every group test's first record; no cluster test is about it)."""

    def toml(self) -> str:
        return (
            f"broker_session_timeout_ms = {self.session_ms}\n"
            f"replica_lag_time_max_ms = {self.lag_ms}\n"
            f"replication_timeout_ms = {self.replication_timeout_ms}\n"
            "replica_fetch_wait_ms = 200\n"
            f"group_initial_rebalance_delay_ms = {self.group_delay_ms}\n"
        )


class Cluster:
    def __init__(
        self,
        directory: str,
        brokers: int = 3,
        settings: Settings | None = None,
        *extra: str,
        etcd=None,
        kafka: bool = False,
    ) -> None:
        self.directory = directory
        self.settings = settings or Settings()
        self.etcd = etcd or EtcdProcess(os.path.join(directory, "etcd"))
        """Anything with start(), stop() and url (etcd://host:port): EtcdProcess by default."""
        self.ids = list(range(1, brokers + 1))
        self.brokers: dict[int, ServerProcess] = {}
        self.extra = extra
        self.kafka = kafka
        """Each broker also serves Kafka clients (ServerProcess.kafka_target)."""
        self._channels: dict[str, grpc.Channel] = {}

    def start(self) -> Cluster:
        self.etcd.start()
        config = os.path.join(self.directory, "cluster.toml")
        with open(config, "w") as f:
            f.write(self.settings.toml())
        for i in self.ids:
            self.brokers[i] = self.broker_process(i, config).start()
        return self

    def broker_process(self, broker_id: int, config: str, **where) -> ServerProcess:
        """The (not yet started) process of one broker; a subclass may place it elsewhere (`where`: the
        ServerProcess's port, host and wrapper; tests/helpers/netns.py)."""
        return ServerProcess(
            os.path.join(self.directory, f"b{broker_id}"),
            "--cluster",
            self.cluster_url(broker_id),
            "--broker-id",
            str(broker_id),
            "--config",
            config,
            *self.extra,
            kafka=self.kafka,
            **where,
        )

    def cluster_url(self, broker_id: int) -> str:
        """The etcd URL broker `broker_id` is given (a subclass may route one broker through a proxy)."""
        return self.etcd.url

    def data_dir(self, broker_id: int) -> str:
        return self.brokers[broker_id].data_dir

    def live(self) -> list[int]:
        return [i for i, b in self.brokers.items() if b.proc is not None]

    def kill(self, broker_id: int) -> None:
        self.brokers[broker_id].kill()

    def pause(self, broker_id: int) -> None:
        """SIGSTOP: the process stays, silent (a long GC pause, a frozen VM)."""
        proc = self.brokers[broker_id].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)

    def resume(self, broker_id: int) -> None:
        proc = self.brokers[broker_id].proc
        if proc is not None:
            os.kill(proc.pid, signal.SIGCONT)

    def restart(self, broker_id: int) -> None:
        self.brokers[broker_id].start()

    def stop(self) -> None:
        for i in self.brokers:
            self.resume(i)  # a paused broker cannot stop
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        for b in self.brokers.values():
            b.stop()
        self.etcd.stop()

    # -- raw calls ------------------------------------------------------------------------------------
    def channel(self, target: str) -> grpc.Channel:
        found = self._channels.get(target)
        if found is None:
            found = self._channels[target] = grpc.insecure_channel(target)
        return found

    def call(self, target: str, service: str, name: str, request, timeout_s: float = 10.0):
        method = methods.method(service, name)
        stub = self.channel(target).unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            return stub(request, timeout=timeout_s)
        except grpc.RpcError as err:
            raise error_from_rpc(err, target) from None

    def any_call(self, service: str, name: str, request, timeout_s: float = 10.0):
        """Ask the live brokers in turn until one answers."""
        last: Exception | None = None
        for i in self.live():
            try:
                return self.call(self.brokers[i].target, service, name, request, timeout_s)
            except TidelogError as exc:
                last = exc
        raise last or RuntimeError("no live broker")

    def create_topic(self, name: str, partitions: int, rf: int, min_isr: int = 1) -> pb.TopicDescription:
        return self.any_call(
            "Admin",
            "CreateTopic",
            pb.CreateTopicRequest(
                name=name, partitions=partitions, replication_factor=rf, config={"min_insync_replicas": str(min_isr)}
            ),
        )

    def metadata(self, topic: str) -> dict[int, pb.PartitionMetadata]:
        found = self.any_call("Admin", "Metadata", pb.MetadataRequest(topics=[topic]))
        return {p.partition: p for p in found.topics[0].partitions}

    def wait(self, predicate, timeout_s: float = 30.0, what: str = "the cluster"):
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except TidelogError as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(0.1)
        raise AssertionError(f"{what() if callable(what) else what}: not reached in {timeout_s} s (last: {last})")

    def wait_leaders(self, topic: str, partitions: int, isr: int | None = None, timeout_s: float = 30.0):
        """Until every partition has a live leader (and, if given, an ISR of that size)."""

        def ready():
            meta = self.metadata(topic)
            ok = len(meta) == partitions and all(
                p.leader_id in self.live() and (isr is None or len(p.isr) == isr) for p in meta.values()
            )
            return meta if ok else None

        return self.wait(ready, timeout_s, f"leaders of {topic}")

    # -- a recorded producer and consumer ---------------------------------------------------------------
    def send(
        self, history: History, process: str, topic: str, partition: int, value: bytes, leaders: dict, acks: str = "all"
    ) -> bool:
        """One attempt, logged: True when acknowledged."""
        op = history.send_invoke(process, topic, partition, value)
        address = leaders.get(partition)
        if not address:
            history.send_fail(op, "no leader known")
            return False
        request = pb.ProduceRecordsRequest(
            topic=topic, partition=partition, records=[pb.Record(value=value)], acks=ACKS[acks]
        )
        try:
            reply = self.call(address, "Producer", "ProduceRecords", request, timeout_s=8)
        except TidelogError as exc:
            definite = exc.code in (6, 19)  # refused before appending: NOT_LEADER, NOT_ENOUGH_REPLICAS
            (history.send_fail if definite else history.send_info)(op, f"{type(exc).__name__}: {exc.message}")
            leaders.pop(partition, None)
            return False
        history.send_ok(op, reply.results[0].base_offset)
        return True

    def send_acked(
        self,
        history: History,
        process: str,
        topic: str,
        partition: int,
        value: bytes,
        leaders: dict,
        acks: str = "all",
        attempts: int = 50,
    ) -> int:
        """Send until acknowledged (each attempt its own value: value/1, value/2, ...), refreshing the
        leaders between attempts; the attempts it took."""
        for n in range(1, attempts + 1):
            if partition not in leaders:
                time.sleep(0.1)
                with contextlib.suppress(TidelogError):
                    leaders.update({p: m.leader_address for p, m in self.metadata(topic).items() if m.leader_address})
            if self.send(history, process, topic, partition, value + b"/%d" % n, leaders, acks):
                return n
        raise AssertionError(f"{topic}-{partition}: not acknowledged in {attempts} attempts")

    def poll(self, history: History, process: str, topic: str, partition: int, offset: int, leaders: dict) -> int:
        """One fetch from the leader, logged; the next offset."""
        address = leaders.get(partition)
        if not address:
            return offset
        try:
            reply = self.call(
                address,
                "Consumer",
                "FetchRecords",
                pb.FetchRequest(topic=topic, partition=partition, offset=offset, max_wait_ms=100),
                timeout_s=5,
            )
        except TidelogError:
            leaders.pop(partition, None)
            return offset
        records = [(r.offset, r.value) for r in reply.records]
        if records:
            history.poll_ok(process, topic, partition, records, reply.high_watermark)
        return reply.next_offset


def dump(data_dir: str, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes, int]]]:
    """Every record of every partition of `topic` in a stopped broker's data directory:
    partition → [(offset, value, leader epoch)]."""
    from tidelog.config import EngineConfig
    from tidelog.engine.engine import Engine

    out: dict[int, list[tuple[int, bytes, int]]] = {}
    with Engine.open(data_dir, EngineConfig()) as engine:
        if topic not in engine.list_topics():
            return {}
        for p in range(partitions):
            plog = engine.partition_log(topic, p)
            start, end = plog.offset_range()[:2]
            rows: list[tuple[int, bytes, int]] = []
            offset = start
            while offset < end:
                data = plog.read_replica(offset, 1 << 20)
                if not data:
                    break
                pos = 0
                view = memoryview(data)
                while pos < len(view):
                    batch = BatchView(view, pos)
                    epoch = int(np.frombuffer(view[pos + 12 : pos + 16], dtype=">i4")[0])
                    for r in batch.records():
                        rows.append((r.offset, bytes(r.value) if r.value is not None else b"", epoch))
                    offset = batch.last_offset + 1
                    pos += batch.size
            out[p] = rows
    return out
