"""The group coordinator's view of a cluster's topics: which exist and how many partitions they have
(from etcd, through the replica manager's snapshot), and their offsets (from this broker when it leads
the partition, else asked of the leader). Called from the engine's thread pool, never the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from ..engine.engine import Engine
from ..errors import BrokerUnavailableError, UnknownTopicError
from ..replication.manager import ReplicaManager
from ..v1 import tidelog_pb2 as pb
from ..values import PartitionOffsets
from ..wire import methods
from ..wire.statuses import error_from_rpc

CALL_TIMEOUT_S = 5.0


class ClusterTopics:
    def __init__(
        self, engine: Engine, replicas: ReplicaManager, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        """credentials: what this broker shows the others (security/peers.py); None: plain channels."""
        self.engine, self.replicas, self._credentials = engine, replicas, credentials
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def clock(self) -> int:
        return self.engine.clock()

    def list_topics(self) -> list[str]:
        return sorted(t for t in self.replicas.snapshot.topics if not t.startswith("__"))

    def partitions(self, name: str) -> int:
        placement = self.replicas.snapshot.topics.get(name)
        if placement is None:
            raise UnknownTopicError(f"unknown topic {name!r}", topic=name)
        return placement.partitions

    def on_topic_deleted(self, listener: Callable[[str], None]) -> None:
        """Tell `listener` of topics deleted in the cluster. A local copy dropped because a reassignment
        moved its replicas elsewhere is not a deleted topic: its groups' committed offsets stay."""

        def deleted(name: str) -> None:
            if name not in self.replicas.snapshot.topics:
                listener(name)

        self.engine.on_topic_deleted(deleted)

    def record_timestamp(self, topic: str, partition: int, offset: int) -> int | None:
        if self.replicas.is_leader(topic, partition):
            return self.engine.record_timestamp(topic, partition, offset)
        return None  # (the time lag of a partition led elsewhere is not shown)

    def list_offsets(self, topic: str, partition: int, at: Any = None) -> Any:
        if self.replicas.is_leader(topic, partition):
            return self.engine.list_offsets(topic, partition, at)
        self.partitions(topic)  # UnknownTopicError first
        error = self.replicas.leader_error(topic, partition)
        if not error.leader_address:
            raise BrokerUnavailableError(f"{topic}-{partition} has no leader now; retry shortly")
        request = pb.ListOffsetsRequest(topic=topic, partition=partition)
        if isinstance(at, int) and not isinstance(at, bool):
            request.position.timestamp_ms = at
        reply = self.call(error.leader_address, "Admin", "ListOffsets", request)
        offsets = PartitionOffsets(reply.log_start, reply.log_end, reply.high_watermark, reply.flushed)
        if at is None:
            return offsets
        if at in ("earliest", "latest"):
            return offsets.log_start if at == "earliest" else offsets.high_watermark
        return None if reply.offset < 0 else reply.offset

    def call(self, address: str, service: str, name: str, request: Any) -> Any:
        """One unary call to another broker (a channel kept per address); its error as tidelog's."""
        method = methods.method(service, name)
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = (
                    grpc.secure_channel(address, self._credentials)
                    if self._credentials is not None
                    else grpc.insecure_channel(address)
                )
        stub = channel.unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            return stub(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            raise error_from_rpc(err, address) from None

    def close(self) -> None:
        with self._lock:
            channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()
