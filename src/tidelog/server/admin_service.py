"""tidelog.v1.Admin: topics and offsets. One method per RPC, translation only."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from ..cluster.membership import BrokerSession, cluster_status
from ..config import TopicConfig
from ..engine.async_engine import AsyncEngine
from ..errors import ClusterUnavailableError, InvalidConfigError, TidelogError
from ..v1 import tidelog_pb2 as pb
from ..values import TopicDescription
from ..wire import methods
from . import requests, status
from .consume_service import ConsumeService, check_timestamp

_T = TypeVar("_T")
_TOPIC_FIELDS = {f.name: f.type for f in dataclasses.fields(TopicConfig)}


def parse_topic_config(settings: Mapping[str, str]) -> dict[str, Any]:
    """Text values from the wire → typed TopicConfig overrides (validated by TopicConfig)."""
    out: dict[str, Any] = {}
    for name, text in settings.items():
        if name not in _TOPIC_FIELDS:
            raise InvalidConfigError(f"unknown topic setting {name!r}; known: {', '.join(sorted(_TOPIC_FIELDS))}")
        if _TOPIC_FIELDS[name] in ("int", int):
            try:
                out[name] = int(text)
            except ValueError:
                raise InvalidConfigError(f"{name} must be an integer, got {text!r}") from None
        else:
            out[name] = text
    return out


def describe_message(desc: TopicDescription) -> pb.TopicDescription:
    msg = pb.TopicDescription(name=desc.name, created_ms=desc.created_ms)
    for key, value in desc.config.to_dict().items():
        msg.config[key] = str(value)
    for p in desc.partitions:
        msg.partitions.add(
            partition=p.partition,
            log_start=p.log_start,
            log_end=p.log_end,
            high_watermark=p.high_watermark,
            flushed=p.flushed,
            size_bytes=p.size_bytes,
            segments=p.segments,
        )
    return msg


class AdminService:
    def __init__(
        self,
        engine: AsyncEngine,
        consume: ConsumeService,
        cluster: Callable[[], BrokerSession | None] = lambda: None,
        address: str = "",
    ) -> None:
        self.engine = engine
        self.consume = consume
        self._cluster = cluster  # this broker's membership, when it is part of a cluster
        self._address = address  # this broker's own host:port

    def handler(self) -> grpc.GenericRpcHandler:
        return methods.handlers(
            "Admin",
            {
                "CreateTopic": requests.unary(self.create_topic),
                "DeleteTopic": requests.unary(self.delete_topic),
                "ListTopics": requests.unary(self.list_topics),
                "DescribeTopic": requests.unary(self.describe_topic),
                "ListOffsets": requests.unary(self.list_offsets),
                "DescribeCluster": requests.unary(self.describe_cluster),
            },
        )

    async def _call(self, context: grpc.aio.ServicerContext, call: Awaitable[_T]) -> _T:
        """Await an engine call; its error ends the RPC with its status."""
        try:
            return await call
        except TidelogError as exc:
            await status.abort(context, exc)

    async def create_topic(
        self, request: pb.CreateTopicRequest, context: grpc.aio.ServicerContext
    ) -> pb.TopicDescription:
        try:
            settings = parse_topic_config(request.config)
        except TidelogError as exc:
            await status.abort(context, exc)
        desc = await self._call(context, self.engine.create_topic(request.name, request.partitions or 1, **settings))
        return describe_message(desc)

    async def delete_topic(
        self, request: pb.DeleteTopicRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTopicResponse:
        await self._call(context, self.engine.delete_topic(request.name))
        return pb.DeleteTopicResponse()

    async def list_topics(
        self, request: pb.ListTopicsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTopicsResponse:
        return pb.ListTopicsResponse(topics=await self._call(context, self.engine.list_topics()))

    async def describe_topic(
        self, request: pb.DescribeTopicRequest, context: grpc.aio.ServicerContext
    ) -> pb.TopicDescription:
        return describe_message(await self._call(context, self.engine.describe(request.name)))

    async def list_offsets(
        self, request: pb.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOffsetsResponse:
        offsets = await self._call(context, self.engine.list_offsets(request.topic, request.partition))
        response = pb.ListOffsetsResponse(
            offset=-1,
            log_start=offsets.log_start,
            log_end=offsets.log_end,
            high_watermark=offsets.high_watermark,
            flushed=offsets.flushed,
        )
        kind = request.position.WhichOneof("kind") if request.HasField("position") else None
        if kind == "timestamp_ms":
            try:
                check_timestamp(request.position.timestamp_ms)
            except TidelogError as exc:
                await status.abort(context, exc)
            found = await self._call(
                context, self.engine.offset_at(request.topic, request.partition, request.position.timestamp_ms)
            )
            response.offset = -1 if found is None else found
        elif kind is not None:
            try:
                response.offset = await self.consume.resolve(request.topic, request.partition, request.position)
            except TidelogError as exc:
                await status.abort(context, exc)
        return response

    async def describe_cluster(self, request: pb.DescribeClusterRequest, context: Any) -> pb.ClusterDescription:
        session = self._cluster()
        if session is None:
            return pb.ClusterDescription(
                clustered=False,
                this_broker_id=-1,
                controller_id=-1,
                brokers=[pb.ClusterBroker(broker_id=-1, address=self._address)],
            )
        try:
            found = await cluster_status(session.client, session.cluster)
        except Exception as exc:  # aetcd's own errors: etcd out of reach
            await status.abort(context, ClusterUnavailableError(f"cannot read the cluster from etcd: {exc}"))
        return pb.ClusterDescription(
            clustered=True,
            cluster_name=session.cluster,
            this_broker_id=session.broker_id,
            brokers=[pb.ClusterBroker(broker_id=b.broker_id, address=b.endpoint, epoch=b.epoch) for b in found.brokers],
            controller_id=-1 if found.controller_id is None else found.controller_id,
            controller_epoch=found.controller_epoch or 0,
        )
