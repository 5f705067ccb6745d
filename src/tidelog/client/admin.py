"""Admin client: topics and offsets."""

from __future__ import annotations

from ..broker.results import PartitionDescription, PartitionOffsets
from ..v1 import tidelog_pb2 as pb
from .channel import DEFAULT_TARGET, sync_channel, unary


class Admin:
    """Topic management and offsets of a broker. Thread-safe; close() (or `with`) releases the channel."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout_s: float = 30.0) -> None:
        self.target = target
        self._channel = sync_channel(target)

        def rpc(name, req, resp):
            return unary(self._channel, f"/tidelog.v1.Admin/{name}", req, resp, target, timeout_s)

        self._create = rpc("CreateTopic", pb.CreateTopicRequest, pb.TopicDescription)
        self._delete = rpc("DeleteTopic", pb.DeleteTopicRequest, pb.DeleteTopicResponse)
        self._list = rpc("ListTopics", pb.ListTopicsRequest, pb.ListTopicsResponse)
        self._describe = rpc("DescribeTopic", pb.DescribeTopicRequest, pb.TopicDescription)
        self._offsets = rpc("ListOffsets", pb.ListOffsetsRequest, pb.ListOffsetsResponse)

    def create_topic(self, name: str, partitions: int = 1, **config) -> pb.TopicDescription:
        return self._create(pb.CreateTopicRequest(name=name, partitions=partitions,
                                                  config={k: str(v) for k, v in config.items()}))

    def delete_topic(self, name: str) -> None:
        self._delete(pb.DeleteTopicRequest(name=name))

    def list_topics(self) -> list[str]:
        return list(self._list(pb.ListTopicsRequest()).topics)

    def describe(self, name: str) -> dict:
        """{"name", "config", "created_ms", "partitions": [PartitionDescription, ...]}."""
        msg = self._describe(pb.DescribeTopicRequest(name=name))
        return {"name": msg.name, "config": dict(msg.config), "created_ms": msg.created_ms,
                "partitions": [PartitionDescription(p.partition, p.log_start, p.log_end, p.high_watermark,
                                                    p.flushed, p.size_bytes, p.segments) for p in msg.partitions]}

    def partitions(self, name: str) -> int:
        return len(self._describe(pb.DescribeTopicRequest(name=name)).partitions)

    def list_offsets(self, topic: str, partition: int, at: int | str | None = None):
        """Like Engine.list_offsets: PartitionOffsets, or the offset for "earliest"/"latest"/a timestamp."""
        request = pb.ListOffsetsRequest(topic=topic, partition=partition)
        if at in ("earliest", "latest"):
            request.position.boundary = pb.LATEST if at == "latest" else pb.EARLIEST
        elif at is not None:
            request.position.timestamp_ms = int(at)
        msg = self._offsets(request)
        if at is None:
            return PartitionOffsets(msg.log_start, msg.log_end, msg.high_watermark, msg.flushed)
        return None if msg.offset < 0 else msg.offset

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
