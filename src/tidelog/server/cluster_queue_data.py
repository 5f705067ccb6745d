"""A cluster's queues reach their topics here: a partition this broker leads is read from the engine
(which shows only what every in-sync replica has), one led elsewhere is asked of its leader over gRPC;
dead letters and redriven records are produced to their leaders with acks=all. Topics and partition
counts come from etcd, through the replica manager's snapshot. Called from a pool thread, never the
event loop (the calls block)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from .._native.record_batch import Record
from ..codec.batch import iter_batches
from ..codec.partitioner import Partitioner
from ..engine.engine import Engine
from ..errors import BrokerUnavailableError, TopicExistsError
from ..replication.manager import ReplicaManager
from ..v1 import tidelog_pb2 as pb
from ..values import PartitionOffsets
from .cluster_topics import ClusterTopics

POLL_S = 0.05  # how often a waiting receiver looks for records at other brokers
OFFSETS_FRESH_S = 0.02  # a remote partition's offsets are asked again after this long
CREATED_WAIT_S = 10.0  # a dead-letter topic created here: how long its leader may take to appear


class ClusterQueueData:
    poll_s: float | None = POLL_S

    def __init__(
        self,
        engine: Engine,
        replicas: ReplicaManager,
        address: Callable[[], str],
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """address: this broker's own gRPC address (topics are created through its Admin service,
        which places them in etcd as any client's would be); credentials: what it shows the brokers it
        calls (security/peers.py)."""
        self.engine, self.replicas, self._address = engine, replicas, address
        self._topics = ClusterTopics(engine, replicas, credentials)
        self._partitioners: dict[str, Partitioner] = {}
        self._offsets: dict[tuple[str, int], tuple[float, PartitionOffsets]] = {}
        self._lock = threading.Lock()

    # -- what is where ----------------------------------------------------------------------------------
    def has_topic(self, topic: str) -> bool:
        return topic in self.replicas.snapshot.topics

    def partitions(self, topic: str) -> int:
        return self._topics.partitions(topic)

    def _leader(self, topic: str, partition: int) -> str | None:
        """None when this broker leads the partition, else the leader's address."""
        if self.replicas.is_leader(topic, partition):
            return None
        self.partitions(topic)  # UnknownTopicError first
        error = self.replicas.leader_error(topic, partition)
        if not error.leader_address:
            raise BrokerUnavailableError(f"{topic}-{partition} has no leader now; retry shortly")
        return error.leader_address

    # -- reads ------------------------------------------------------------------------------------------
    def offsets(self, topic: str, partition: int) -> PartitionOffsets:
        if self.replicas.is_leader(topic, partition):
            return self.engine.list_offsets(topic, partition)
        key, now = (topic, partition), time.monotonic()
        with self._lock:
            cached = self._offsets.get(key)
        if cached is not None and now - cached[0] < OFFSETS_FRESH_S:
            return cached[1]
        found = self._topics.list_offsets(topic, partition)
        with self._lock:
            self._offsets[key] = (now, found)
        return found

    def record_timestamp(self, topic: str, partition: int, offset: int) -> int | None:
        if self.replicas.is_leader(topic, partition):
            return self.engine.record_timestamp(topic, partition, offset)
        recs = self.read(topic, partition, offset, 1)
        return recs[0].timestamp if recs and recs[0].offset == offset else None

    def read(self, topic: str, partition: int, offset: int, max_bytes: int) -> list[Record]:
        leader = self._leader(topic, partition)
        if leader is None:
            return self.engine.fetch(topic, partition, offset, max_bytes).records()
        reply = self._call(
            leader,
            "Consumer",
            "Fetch",
            pb.FetchRequest(topic=topic, partition=partition, offset=offset, max_bytes=max_bytes),
        )
        out: list[Record] = []
        for batch in iter_batches(reply.batches):
            out += batch.records(offset, True)
        return out

    # -- writes -----------------------------------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int) -> None:
        """Through this broker's Admin service (placed in etcd), then wait for its leaders."""
        try:
            self._call(
                self._address(), "Admin", "CreateTopic", pb.CreateTopicRequest(name=topic, partitions=partitions)
            )
        except TopicExistsError:  # someone else created it meanwhile
            pass
        deadline = time.monotonic() + CREATED_WAIT_S
        while time.monotonic() < deadline:
            if self.has_topic(topic) and all(
                self.replicas.is_leader(topic, p) or self.replicas.leader_error(topic, p).leader_address
                for p in range(self.partitions(topic))
            ):
                return
            time.sleep(0.05)
        raise BrokerUnavailableError(f"topic {topic} was created but has no leader yet; retry shortly")

    def produce(self, topic: str, values: list[bytes | None], keys: list[bytes | None], headers: list[list]) -> None:
        partitioner = self._partitioners.setdefault(topic, Partitioner())
        for partition, idx in partitioner.split(self.partitions(topic), keys):
            picked = range(len(values)) if idx is None else [int(i) for i in idx]
            request = pb.ProduceRecordsRequest(topic=topic, partition=partition, acks=pb.ACKS_ALL)
            for i in picked:
                rec = request.records.add(headers=[pb.Header(key=k, value=v) for k, v in headers[i]])
                key, value = keys[i], values[i]
                if key is not None:
                    rec.key = key
                if value is not None:
                    rec.value = value
            leader = self._leader(topic, partition)
            reply = self._call(self._address() if leader is None else leader, "Producer", "ProduceRecords", request)
            for result in reply.results:
                if result.HasField("error") and result.error.code:
                    raise BrokerUnavailableError(
                        f"writing to {topic}-{partition} failed: {result.error.message}; retry shortly"
                    )

    # -- wakes ------------------------------------------------------------------------------------------
    def add_listener(self, topic: str, partition: int, listener: Callable[[], None]) -> None:
        """Nothing: leadership moves, and records arriving at another broker call no listener here; a
        waiting receiver looks again every `poll_s`."""

    def remove_listener(self, topic: str, partition: int, listener: Callable[[], None]) -> None:
        pass

    def _call(self, address: str, service: str, name: str, request: Any) -> Any:
        return self._topics.call(address, service, name, request)

    def close(self) -> None:
        self._topics.close()
