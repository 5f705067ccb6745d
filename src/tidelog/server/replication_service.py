"""tidelog.v1.Replication: the leader's side of the protocol followers copy partitions with.

One Replicate stream per followed partition: each request is a fetch from the follower's log end in
the epoch it follows; the manager (replication/manager.py) fences the epoch, records the follower's
progress and answers with the batches after it. Errors travel in the answer and the stream goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from ..errors import TidelogError
from ..replication.manager import ReplicaManager
from ..v1 import tidelog_pb2 as pb
from ..wire import methods
from ..wire.statuses import error_message
from . import requests, status

MAX_WAIT_MS = 5_000


class ReplicationService:
    def __init__(self, manager: Callable[[], ReplicaManager | None]) -> None:
        self._manager = manager  # None on a single broker (nothing to replicate)

    def handler(self) -> grpc.GenericRpcHandler:
        return methods.handlers(
            "Replication",
            {"Replicate": requests.stream(self.replicate), "EpochEndOffset": requests.unary(self.epoch_end_offset)},
        )

    def _need(self) -> ReplicaManager:
        manager = self._manager()
        if manager is None:
            raise TidelogError("this broker is not part of a cluster: it has no replicas to serve")
        return manager

    async def replicate(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReplicaFetchResponse]:
        async for request in requests.decoded(pb.ReplicaFetchRequest, request_iterator):
            try:
                batches, hw, start = await self._need().replica_fetch(
                    request.topic,
                    request.partition,
                    request.replica_id,
                    request.leader_epoch,
                    request.fetch_offset,
                    request.max_bytes,
                    min(max(request.max_wait_ms, 0), MAX_WAIT_MS),
                    request.replica_epoch,
                )
            except TidelogError as exc:
                yield pb.ReplicaFetchResponse(fetch_offset=request.fetch_offset, error=error_message(exc))
                continue
            yield pb.ReplicaFetchResponse(
                fetch_offset=request.fetch_offset, batches=bytes(batches), high_watermark=hw, log_start=start
            )

    async def epoch_end_offset(
        self, request: pb.EpochEndOffsetRequest, context: grpc.aio.ServicerContext
    ) -> pb.EpochEndOffsetResponse:
        try:
            epoch, end = self._need().epoch_end_offset(
                request.topic, request.partition, request.leader_epoch, request.requested_epoch
            )
        except TidelogError as exc:
            await status.abort(context, exc)
        return pb.EpochEndOffsetResponse(epoch=epoch, end_offset=end)
