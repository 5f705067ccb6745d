"""tidelog.v1.Groups: consumer-group membership, commits and administration. Translation only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import grpc

from ..engine.async_engine import AsyncEngine
from ..errors import InvalidRequestError, TidelogError
from ..groups.coordinator import DEFAULT_SESSION_TIMEOUT_MS, GroupCoordinator
from ..v1 import tidelog_pb2 as pb
from ..values import MemberState
from ..wire import methods
from . import requests, status

log = logging.getLogger("tidelog.server")

EXPIRY_CHECK_S = 0.25  # how often dead members are looked for

_T = TypeVar("_T")


def _tps(items: Iterable[pb.TopicPartition]) -> list[tuple[str, int]]:
    return [(tp.topic, tp.partition) for tp in items]


def assignment_message(state: MemberState) -> pb.MemberAssignment:
    return pb.MemberAssignment(
        member_id=state.member_id,
        generation=state.generation,
        heartbeat_interval_ms=state.heartbeat_interval_ms,
        partitions=[pb.TopicPartition(topic=t, partition=p) for t, p in state.assignment],
        session_token=state.session_token,
    )


class GroupsService:
    """In a cluster, `coordinator` is set only while this broker leads the group-state partition
    (`coordinating`); elsewhere every call is answered NOT_COORDINATOR naming the broker that does."""

    def __init__(
        self,
        engine: AsyncEngine,
        coordinator: GroupCoordinator | None,
        elsewhere: Callable[[], TidelogError] | None = None,
    ) -> None:
        self.engine = engine
        self.coordinator = coordinator
        self._elsewhere = elsewhere  # the error naming the coordinator, when this broker is not it
        self._expiry: asyncio.Future[None] | None = None

    def handler(self) -> grpc.GenericRpcHandler:
        return methods.handlers(
            "Groups",
            {
                "JoinGroup": requests.unary(self.join),
                "Heartbeat": requests.unary(self.heartbeat),
                "LeaveGroup": requests.unary(self.leave),
                "CommitOffsets": requests.unary(self.commit),
                "FetchCommittedOffsets": requests.unary(self.committed),
                "ListGroups": requests.unary(self.list_groups),
                "DescribeGroup": requests.unary(self.describe),
                "DeleteGroup": requests.unary(self.delete),
                "ResetOffsets": requests.unary(self.reset),
            },
        )

    def start(self) -> None:
        """Remove members whose session timed out even when nobody calls in."""

        async def expire_forever() -> None:
            while True:
                await asyncio.sleep(EXPIRY_CHECK_S)
                coordinator = self.coordinator
                if coordinator is not None:
                    try:
                        await self.engine.offload(coordinator.expire)
                    except TidelogError as exc:  # e.g. leadership lost while recording the expiry
                        log.warning("expiring group members failed: %s", exc.message)

        self._expiry = asyncio.ensure_future(expire_forever())

    def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    async def _call(self, context: grpc.aio.ServicerContext, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the coordinator's method `name` in the pool; its error (or NOT_COORDINATOR) ends the RPC."""
        coordinator = self.coordinator
        try:
            if coordinator is None:
                raise self._elsewhere() if self._elsewhere is not None else TidelogError("no group coordinator")
            return await self.engine.offload(getattr(coordinator, name), *args, **kwargs)
        except TidelogError as exc:
            await status.abort(context, exc)

    async def join(self, request: pb.JoinGroupRequest, context: grpc.aio.ServicerContext) -> pb.MemberAssignment:
        state = await self._call(
            context,
            "join",
            request.group_id,
            list(request.topics),
            session_timeout_ms=request.session_timeout_ms or DEFAULT_SESSION_TIMEOUT_MS,
            assignor=request.assignor or "sticky",
            client_id=request.client_id,
            member_id=request.member_id or None,
            owned=_tps(request.owned),
            token=request.session_token,  # a caller over the network shows the member's token
        )
        return assignment_message(state)

    async def heartbeat(self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext) -> pb.MemberAssignment:
        state = await self._call(
            context,
            "heartbeat",
            request.group_id,
            request.member_id,
            request.generation,
            _tps(request.owned),
            token=request.session_token,
        )
        return assignment_message(state)

    async def leave(self, request: pb.LeaveGroupRequest, context: grpc.aio.ServicerContext) -> pb.LeaveGroupResponse:
        await self._call(context, "leave", request.group_id, request.member_id, token=request.session_token)
        return pb.LeaveGroupResponse()

    async def commit(
        self, request: pb.CommitOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommitOffsetsResponse:
        offsets = {(o.topic, o.partition): o.offset for o in request.offsets}
        await self._call(
            context,
            "commit",
            request.group_id,
            request.member_id or None,
            request.generation,
            offsets,
            request.metadata,
            token=request.session_token,
        )
        return pb.CommitOffsetsResponse()

    async def committed(
        self, request: pb.FetchCommittedOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.FetchCommittedOffsetsResponse:
        found = await self._call(context, "committed", request.group_id, _tps(request.partitions) or None)
        return pb.FetchCommittedOffsetsResponse(
            offsets=[pb.PartitionOffset(topic=t, partition=p, offset=o) for (t, p), o in sorted(found.items())]
        )

    async def list_groups(
        self, request: pb.ListGroupsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListGroupsResponse:
        return pb.ListGroupsResponse(groups=await self._call(context, "list_groups"))

    async def describe(
        self, request: pb.DescribeGroupRequest, context: grpc.aio.ServicerContext
    ) -> pb.GroupDescription:
        info = await self._call(context, "describe", request.group_id)
        msg = pb.GroupDescription(
            group_id=info["group_id"],
            state=info["state"],
            generation=info["generation"],
            assignor=info["assignor"],
            rebalances=info["rebalances"],
        )
        for m in info["members"]:
            msg.members.add(
                member_id=m["member_id"],
                client_id=m["client_id"],
                topics=m["topics"],
                assignment=[pb.TopicPartition(topic=t, partition=p) for t, p in m["assignment"]],
            )
        for p in info["partitions"]:
            part = msg.partitions.add(topic=p["topic"], partition=p["partition"], end=p["end"], owner=p["owner"] or "")
            for name in ("committed", "lag", "time_lag_ms"):
                if p[name] is not None:
                    setattr(part, name, p[name])
        return msg

    async def delete(self, request: pb.DeleteGroupRequest, context: grpc.aio.ServicerContext) -> pb.DeleteGroupResponse:
        await self._call(context, "delete_group", request.group_id)
        return pb.DeleteGroupResponse()

    async def reset(
        self, request: pb.ResetOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetOffsetsResponse:
        kind = request.WhichOneof("to")
        if kind is None:
            await status.abort(context, InvalidRequestError("reset needs a target: boundary, offset or timestamp_ms"))
        to = {
            "boundary": "latest" if request.boundary == pb.LATEST else "earliest",
            "offset": request.offset,
            "timestamp_ms": "timestamp",
        }[kind]
        offsets = await self._call(
            context,
            "reset_offsets",
            request.group_id,
            request.topic,
            to,
            partitions=list(request.partitions) or None,
            timestamp_ms=request.timestamp_ms if kind == "timestamp_ms" else None,
        )
        return pb.ResetOffsetsResponse(
            offsets=[pb.PartitionOffset(topic=t, partition=p, offset=o) for (t, p), o in sorted(offsets.items())]
        )
