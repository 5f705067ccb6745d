"""Admin client: topics and offsets."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidRequestError, TidelogError
from ..v1 import tidelog_pb2 as pb
from ..values import (
    ClusterBroker,
    ClusterDescription,
    ClusterMetadata,
    PartitionDescription,
    PartitionOffsets,
    QueueDescription,
    QueuePartitionState,
)
from ..wire import methods
from .channel import DEFAULT_TARGET
from .metadata import Metadata
from .queue_backend import settings_of
from .security import ClientSecurity


class Admin:
    """Topic management and offsets. Thread-safe; close() (or `with`) releases the channels.

    target: one address or several ("host:port,host:port"), tried in order until one answers;
    offsets are asked of the partition's leader."""

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout_s: float = 30.0,
        security: ClientSecurity | None = None,
    ) -> None:
        self.target = target
        self._metadata = Metadata(target, timeout_s=timeout_s, security=security)

        def rpc(name):
            method = methods.method("Admin", name)
            return lambda request: self._metadata.call(method, request)

        self._create = rpc("CreateTopic")
        self._delete = rpc("DeleteTopic")
        self._alter = rpc("AlterTopic")
        self._list = rpc("ListTopics")
        self._describe = rpc("DescribeTopic")
        self._describe_cluster = rpc("DescribeCluster")
        self._list_offsets = methods.method("Admin", "ListOffsets")

        def grp(name):  # to the group coordinator (in a cluster: the broker NOT_COORDINATOR names)
            method = methods.method("Groups", name)
            return lambda request: self._metadata.call_coordinator(method, request)

        self._list_groups = grp("ListGroups")
        self._describe_group = grp("DescribeGroup")
        self._delete_group = grp("DeleteGroup")
        self._reset = grp("ResetOffsets")
        self._committed = grp("FetchCommittedOffsets")

        def queue(name):  # to the queue coordinator (in a cluster: the broker NOT_COORDINATOR names)
            method = methods.method("Queue", name)
            return lambda request: self._metadata.call_coordinator(method, request, role="queues")

        self._list_queues = queue("ListQueues")
        self._describe_queue = queue("DescribeQueue")
        self._delete_queue = queue("DeleteQueue")
        self._reset_queue = queue("ResetQueue")
        self._redrive = queue("Redrive")

    def create_topic(
        self, name: str, partitions: int = 1, replication_factor: int | None = None, **config
    ) -> pb.TopicDescription:
        """replication_factor: copies of each partition in a cluster (None: the broker's default)."""
        return self._create(
            pb.CreateTopicRequest(
                name=name,
                partitions=partitions,
                replication_factor=replication_factor or 0,
                config={k: str(v) for k, v in config.items()},
            )
        )

    def alter_topic(
        self, name: str, *, partitions: int | None = None, min_insync_replicas: int | None = None
    ) -> pb.TopicDescription:
        """Grow a topic to `partitions` (only ever more: InvalidPartitionError names the current count)
        and/or set its min_insync_replicas (in a cluster: 1 to its replication factor). Keyed records
        may map to another partition once producers see the new count, as in Kafka."""
        return self._alter(
            pb.AlterTopicRequest(name=name, partitions=partitions or 0, min_insync_replicas=min_insync_replicas or 0)
        )

    def metadata(self, topics: Sequence[str] | None = None) -> ClusterMetadata:
        """The brokers and where each partition of `topics` (None: all) is led."""
        return self._metadata.refresh(list(topics or ()))

    def delete_topic(self, name: str) -> None:
        self._delete(pb.DeleteTopicRequest(name=name))

    def describe_cluster(self) -> ClusterDescription:
        """The brokers of the broker's cluster and its controller (a single broker lists itself)."""
        msg = self._describe_cluster(pb.DescribeClusterRequest())
        return ClusterDescription(
            msg.clustered,
            msg.cluster_name,
            None if msg.this_broker_id < 0 else msg.this_broker_id,
            [ClusterBroker(b.broker_id, b.address, b.epoch) for b in msg.brokers],
            None if msg.controller_id < 0 else msg.controller_id,
            msg.controller_epoch or None,
        )

    def list_topics(self) -> list[str]:
        return list(self._list(pb.ListTopicsRequest()).topics)

    def describe(self, name: str) -> dict:
        """{"name", "config", "created_ms", "partitions": [PartitionDescription, ...]}."""
        msg = self._describe(pb.DescribeTopicRequest(name=name))
        return {
            "name": msg.name,
            "config": dict(msg.config),
            "created_ms": msg.created_ms,
            "partitions": [self._partition(name, p) for p in msg.partitions],
        }

    def _partition(self, topic: str, p: pb.PartitionDescription) -> PartitionDescription:
        """A partition as described; in a cluster with the offsets its leader reports (the broker that
        answered may hold no copy, or a follower's that lags)."""
        offsets = (p.log_start, p.log_end, p.high_watermark, p.flushed)
        if p.replicas and p.leader_id >= 0:
            try:
                offsets = tuple(self.list_offsets(topic, p.partition))
            except TidelogError:
                pass  # the leader is away: what the answering broker knows
        return PartitionDescription(
            p.partition,
            *offsets,
            p.size_bytes,
            p.segments,
            p.leader_id if p.replicas and p.leader_id >= 0 else None,  # a single broker sets none
            p.leader_epoch,
            tuple(p.replicas),
            tuple(p.isr),
            tuple(p.adding_replicas),
            tuple(p.removing_replicas),
        )

    def partitions(self, name: str) -> int:
        return len(self._describe(pb.DescribeTopicRequest(name=name)).partitions)

    def list_offsets(self, topic: str, partition: int, at: int | str | None = None):
        """Like Engine.list_offsets: PartitionOffsets, or the offset for "earliest"/"latest"/a timestamp."""
        request = pb.ListOffsetsRequest(topic=topic, partition=partition)
        if at in ("earliest", "latest"):
            request.position.boundary = pb.LATEST if at == "latest" else pb.EARLIEST
        elif at is not None:
            request.position.timestamp_ms = int(at)
        msg = self._metadata.call_leader(topic, partition, self._list_offsets, request)
        if at is None:
            return PartitionOffsets(msg.log_start, msg.log_end, msg.high_watermark, msg.flushed)
        return None if msg.offset < 0 else msg.offset

    # -- consumer groups -----------------------------------------------------------------------------
    def list_groups(self) -> list[str]:
        return list(self._list_groups(pb.ListGroupsRequest()).groups)

    def describe_group(self, group_id: str) -> dict:
        """state, generation, members (with assignments) and per partition committed, end, lag, time lag."""
        msg = self._describe_group(pb.DescribeGroupRequest(group_id=group_id))
        return {
            "group_id": msg.group_id,
            "state": msg.state,
            "generation": msg.generation,
            "assignor": msg.assignor,
            "rebalances": msg.rebalances,
            "members": [
                {
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "topics": list(m.topics),
                    "assignment": [(tp.topic, tp.partition) for tp in m.assignment],
                }
                for m in msg.members
            ],
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "end": p.end,
                    "owner": p.owner or None,
                    **{k: (getattr(p, k) if p.HasField(k) else None) for k in ("committed", "lag", "time_lag_ms")},
                }
                for p in msg.partitions
            ],
        }

    def committed_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        reply = self._committed(pb.FetchCommittedOffsetsRequest(group_id=group_id))
        return {(o.topic, o.partition): o.offset for o in reply.offsets}

    # -- queues ------------------------------------------------------------------------------------------
    def list_queues(self) -> list[str]:
        return list(self._list_queues(pb.ListQueuesRequest()).queues)

    def describe_queue(self, queue: str) -> QueueDescription:
        """Settings, totals, and per partition start, in flight, available, delayed, oldest unacked age."""
        d = self._describe_queue(pb.DescribeQueueRequest(queue=queue))
        s = d.settings
        return QueueDescription(
            d.name,
            settings_of(s),
            [
                QueuePartitionState(
                    p.topic, p.partition, p.start, p.log_end, p.in_flight, p.available, p.delayed, p.unread,
                    p.oldest_unacked_ms if p.HasField("oldest_unacked_ms") else None,
                )
                for p in d.partitions
            ],
            dict(d.totals),
        )  # fmt: skip

    def delete_queue(self, queue: str) -> None:
        """Forget a queue's state (its records stay in their topics)."""
        self._delete_queue(pb.DeleteQueueRequest(queue=queue))

    def reset_queue(self, queue: str, to: str | dict[tuple[str, int], int]) -> None:
        """Move a queue's start: "earliest", "latest", or {(topic, partition): offset}; forgets its locks,
        delays and delivery counts."""
        if isinstance(to, str):
            self._reset_queue(pb.ResetQueueRequest(queue=queue, to=to))
        else:
            offsets = [pb.PartitionOffset(topic=t, partition=p, offset=o) for (t, p), o in sorted(to.items())]
            self._reset_queue(pb.ResetQueueRequest(queue=queue, offsets=offsets))

    def redrive(self, source: str, target: str, limit: int = 0) -> int:
        """Move the dead letters of `source` back to `target` (each once); returns how many moved."""
        return self._redrive(pb.RedriveRequest(source=source, target=target, limit=limit)).moved

    def delete_group(self, group_id: str) -> None:
        self._delete_group(pb.DeleteGroupRequest(group_id=group_id))

    def reset_offsets(
        self,
        group_id: str,
        topic: str,
        to: str | int,
        *,
        timestamp_ms: int | None = None,
        partitions: list[int] | None = None,
    ) -> dict[tuple[str, int], int]:
        """to: "earliest", "latest", an offset, or "timestamp" with timestamp_ms. Groups without members only."""
        request = pb.ResetOffsetsRequest(group_id=group_id, topic=topic, partitions=partitions or [])
        if to in ("earliest", "latest"):
            request.boundary = pb.LATEST if to == "latest" else pb.EARLIEST
        elif to == "timestamp":
            if timestamp_ms is None:
                raise InvalidRequestError('to="timestamp" needs timestamp_ms')
            request.timestamp_ms = int(timestamp_ms)
        else:
            request.offset = int(to)
        return {(o.topic, o.partition): o.offset for o in self._reset(request).offsets}

    def close(self) -> None:
        self._metadata.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
