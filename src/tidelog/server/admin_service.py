"""tidelog.v1.Admin: topics and offsets. One method per RPC, translation only."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from ..cluster import alter as topic_changes
from ..cluster import controller as etcd_writes
from ..cluster.membership import BrokerSession, cluster_status
from ..cluster.metadata import Snapshot
from ..cluster.placement import NO_LEADER, TopicPlacement, assign_replicas
from ..config import TopicConfig
from ..engine.async_engine import AsyncEngine
from ..engine.topic import validate_topic_name
from ..errors import (
    BrokerUnavailableError,
    ClusterUnavailableError,
    InvalidConfigError,
    TidelogError,
    TopicExistsError,
    UnknownTopicError,
)
from ..replication.manager import ReplicaManager
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


async def create_in_cluster(
    engine: AsyncEngine,
    replicas: ReplicaManager,
    name: str,
    partitions: int,
    replication_factor: int,
    settings: dict[str, Any],
    default_replication_factor: int,
    validate_only: bool = False,
) -> tuple[TopicPlacement, list[tuple[int, ...]], TopicConfig]:
    """Place a topic's replicas on the live brokers (replication_factor 0 or less: the default, capped
    at the live brokers) and write it to etcd, unless validate_only; every broker hosting a replica
    then creates its copy (the leaders serve it once they have). Shared by gRPC and the Kafka listener."""
    validate_topic_name(name)
    if name.startswith("__"):
        raise InvalidConfigError(f"topic names starting with '__' are the broker's own: {name!r}")
    config = TopicConfig().with_overrides(settings)  # refuses bad settings before anything is written
    most = engine.config.max_partitions_per_topic
    if not 1 <= partitions <= most:
        raise InvalidConfigError(f"partitions must be 1 to {most}, got {partitions}")
    session = replicas.session
    found = await cluster_status(session.client, session.cluster)
    live = [b.broker_id for b in found.brokers]
    rf = replication_factor if replication_factor > 0 else min(default_replication_factor, max(len(live), 1))
    if config.min_insync_replicas > rf:
        raise InvalidConfigError(
            f"min_insync_replicas={config.min_insync_replicas} is above the replication factor {rf}: "
            "no acks=all produce could ever succeed"
        )
    placement = TopicPlacement(name, partitions, rf, settings, engine.clock())
    assignment = assign_replicas(live, partitions, rf, start=random.randrange(max(len(live), 1)))
    if name in replicas.snapshot.topics:
        raise TopicExistsError(f"topic {name!r} already exists")
    if not validate_only:
        storage = {b.broker_id: b.storage for b in found.brokers}
        await etcd_writes.create_topic(session.client, session.cluster, placement, assignment, storage)
    return placement, assignment, config


class AdminService:
    def __init__(
        self,
        engine: AsyncEngine,
        consume: ConsumeService,
        cluster: Callable[[], BrokerSession | None] = lambda: None,
        address: Callable[[], str] | str = "",
        replicas: Callable[[], ReplicaManager | None] = lambda: None,
        default_replication_factor: int = 3,
    ) -> None:
        self.engine = engine
        self.consume = consume
        self._cluster = cluster  # this broker's membership, when it is part of a cluster
        self._address_of = address if callable(address) else (lambda: address)  # this broker's host:port
        self._replicas = replicas
        self._default_rf = default_replication_factor

    @property
    def _address(self) -> str:
        return self._address_of()

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
                "Metadata": requests.unary(self.metadata),
                "AlterTopic": requests.unary(self.alter_topic),
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
        replicas = self._replicas()
        if replicas is not None:
            return await self._call(context, self._create_in_cluster(replicas, request, settings))
        desc = await self._call(context, self.engine.create_topic(request.name, request.partitions or 1, **settings))
        return describe_message(desc)

    async def _create_in_cluster(
        self, replicas: ReplicaManager, request: pb.CreateTopicRequest, settings: dict[str, Any]
    ) -> pb.TopicDescription:
        placement, assignment, config = await create_in_cluster(
            self.engine, replicas, request.name, request.partitions or 1, request.replication_factor, settings,
            self._default_rf,
        )  # fmt: skip
        msg = pb.TopicDescription(name=request.name, created_ms=placement.created_ms)
        for key, value in config.to_dict().items():
            msg.config[key] = str(value)
        for p, brokers in enumerate(assignment):
            msg.partitions.add(partition=p, leader_id=brokers[0], leader_epoch=0, replicas=brokers, isr=brokers)
        return msg

    async def alter_topic(
        self, request: pb.AlterTopicRequest, context: grpc.aio.ServicerContext
    ) -> pb.TopicDescription:
        """More partitions and/or a new min_insync_replicas: in etcd for a cluster (every broker then
        applies it), else in this broker's engine."""
        replicas = self._replicas()
        partitions = request.partitions or None
        min_insync = request.min_insync_replicas or None
        try:
            if request.partitions < 0 or request.min_insync_replicas < 0:
                raise InvalidConfigError(
                    "partitions and min_insync_replicas must be positive (0: unchanged), got "
                    f"{request.partitions} and {request.min_insync_replicas}"
                )
            if partitions is None and min_insync is None:
                raise InvalidConfigError("nothing to alter: give a new partition count and/or min_insync_replicas")
            if request.name.startswith("__"):
                raise InvalidConfigError(f"topics named '__...' are the broker's own: {request.name!r}")
        except TidelogError as exc:
            await status.abort(context, exc)
        if replicas is not None:
            return await self._call(context, self._alter_in_cluster(replicas, request.name, partitions, min_insync))
        overrides = {} if min_insync is None else {"min_insync_replicas": min_insync}
        return describe_message(await self._call(context, self.engine.alter_topic(request.name, partitions, overrides)))

    async def _alter_in_cluster(
        self, replicas: ReplicaManager, name: str, partitions: int | None, min_insync: int | None
    ) -> pb.TopicDescription:
        session = replicas.session
        try:
            registered = (await cluster_status(session.client, session.cluster)).brokers
            await topic_changes.alter_topic(
                session.client,
                session.cluster,
                name,
                [b.broker_id for b in registered],
                partitions,
                min_insync,
                self.engine.config.max_partitions_per_topic,
                {b.broker_id: b.storage for b in registered},
            )
            return await self._describe_from_etcd(replicas, name)
        except TidelogError:
            raise
        except Exception as exc:  # aetcd's own errors: etcd out of reach (the change may or may not have landed)
            raise ClusterUnavailableError(f"cannot alter topic {name!r} in etcd: {exc}") from None

    async def _describe_from_etcd(self, replicas: ReplicaManager, name: str) -> pb.TopicDescription:
        """The topic as etcd has it now (this broker's snapshot may not have the change yet)."""
        from ..cluster.membership import prefix
        from ..cluster.metadata import parse

        session = replicas.session
        snapshot = parse(session.cluster, 0, await session.client.get_prefix(prefix(session.cluster)))
        return await self._describe_in_cluster(replicas, name, snapshot)

    async def delete_topic(
        self, request: pb.DeleteTopicRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTopicResponse:
        replicas = self._replicas()
        if replicas is not None:
            await self._call(
                context, etcd_writes.delete_topic(replicas.session.client, replicas.session.cluster, request.name)
            )
            return pb.DeleteTopicResponse()
        await self._call(context, self.engine.delete_topic(request.name))
        return pb.DeleteTopicResponse()

    async def list_topics(
        self, request: pb.ListTopicsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTopicsResponse:
        replicas = self._replicas()
        if replicas is not None:  # the cluster's topics, not only those with a copy here
            return pb.ListTopicsResponse(topics=sorted(t for t in replicas.snapshot.topics if not t.startswith("__")))
        return pb.ListTopicsResponse(topics=await self._call(context, self.engine.list_topics()))

    async def describe_topic(
        self, request: pb.DescribeTopicRequest, context: grpc.aio.ServicerContext
    ) -> pb.TopicDescription:
        replicas = self._replicas()
        if replicas is None:
            return describe_message(await self._call(context, self.engine.describe(request.name)))
        return await self._call(context, self._describe_in_cluster(replicas, request.name))

    async def _describe_in_cluster(
        self, replicas: ReplicaManager, name: str, snapshot: Snapshot | None = None
    ) -> pb.TopicDescription:
        """The topic's placement from etcd (this broker's snapshot unless given), with the offsets of the
        copies this broker holds (a leader's are the partition's; a follower's may lag: clients ask each
        leader for exact offsets)."""
        snapshot = snapshot or replicas.snapshot
        placement = snapshot.topics.get(name)
        if placement is None:
            raise UnknownTopicError(f"unknown topic {name!r}", topic=name)
        local = None
        if name in await self.engine.list_topics():
            local = {p.partition: p for p in (await self.engine.describe(name)).partitions}
        msg = pb.TopicDescription(name=name, created_ms=placement.created_ms)
        for key, value in TopicConfig().with_overrides(placement.config).to_dict().items():
            msg.config[key] = str(value)
        for p in range(placement.partitions):
            state = snapshot.partitions.get((name, p))
            part = msg.partitions.add(partition=p, leader_id=NO_LEADER)
            if state is not None:
                part.leader_id, part.leader_epoch = state.leader, state.leader_epoch
                part.replicas.extend(state.replicas)
                part.isr.extend(state.isr)
                part.adding_replicas.extend(state.adding)
                part.removing_replicas.extend(state.removing)
            info = (
                local.get(p)
                if local is not None and state is not None and replicas.broker_id in state.replicas
                else None
            )
            if info is not None:
                part.log_start, part.log_end, part.high_watermark = info.log_start, info.log_end, info.high_watermark
                part.flushed, part.size_bytes, part.segments = info.flushed, info.size_bytes, info.segments
        return msg

    async def list_offsets(
        self, request: pb.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOffsetsResponse:
        try:
            self.consume.check_leader(request.topic, request.partition)  # a follower's offsets may lag
        except TidelogError as exc:
            await status.abort(context, exc)
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

    async def metadata(self, request: pb.MetadataRequest, context: Any) -> pb.MetadataResponse:
        """Who leads each partition: what clients route by (a single broker leads everything)."""
        wanted = set(request.topics)
        replicas = self._replicas()
        if replicas is None and self.consume.config.cluster:
            # a member of a cluster that has not joined it yet: not a single broker that leads everything
            await status.abort(context, BrokerUnavailableError("the broker is joining its cluster; retry shortly"))
        if replicas is None:
            response = pb.MetadataResponse(
                clustered=False, controller_id=-1, brokers=[pb.ClusterBroker(broker_id=-1, address=self._address)]
            )
            names = sorted(wanted) if wanted else await self._call(context, self.engine.list_topics())
            for name in names:
                count = await self._call(context, self.engine.describe(name))
                topic = response.topics.add(name=name)
                for part in count.partitions:
                    topic.partitions.add(partition=part.partition, leader_id=-1, leader_address=self._address)
            return response
        if not replicas.session.alive:  # cut off from etcd: what it knows may be stale
            await status.abort(
                context,
                BrokerUnavailableError(
                    f"broker {replicas.broker_id} is not in its cluster now (its etcd session lapsed): "
                    "ask another broker"
                ),
            )
        snapshot = replicas.snapshot
        response = pb.MetadataResponse(
            clustered=True,
            controller_id=-1 if snapshot.controller_id is None else snapshot.controller_id,
            brokers=[
                pb.ClusterBroker(broker_id=b.broker_id, address=b.endpoint, epoch=b.epoch)
                for b in sorted(snapshot.brokers.values(), key=lambda b: b.broker_id)
            ],
        )
        for name in sorted(wanted or snapshot.topics):
            placement = snapshot.topics.get(name)
            if placement is None:
                await status.abort(context, UnknownTopicError(f"unknown topic {name!r}", topic=name))
            topic = response.topics.add(name=name)
            for p in range(placement.partitions):
                state = snapshot.partitions.get((name, p))
                if state is None:
                    topic.partitions.add(partition=p, leader_id=NO_LEADER)
                    continue
                topic.partitions.add(
                    partition=p,
                    leader_id=state.leader,
                    leader_address=snapshot.endpoint(state.leader) if state.leader != NO_LEADER else "",
                    leader_epoch=state.leader_epoch,
                    replicas=state.replicas,
                    isr=state.isr,
                    adding_replicas=state.adding,
                    removing_replicas=state.removing,
                )
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
