"""A follower's connection to a partition's leader: one Replicate stream, one fetch at a time.

Channels are shared per leader address (`LinkPool`); each followed partition has its own stream, so a
slow partition never holds up another. A broken stream is opened again on the next fetch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from ..errors import BrokerUnavailableError, RequestTimeoutError
from ..v1 import tidelog_pb2 as pb
from ..wire import methods
from ..wire.statuses import error_from_message, error_from_rpc

CALL_TIMEOUT_S = 10.0


class LinkPool:
    def __init__(
        self,
        replica_id: int,
        replica_epoch: Any,
        max_bytes: int,
        max_wait_ms: int,
        channel_options: list[tuple[str, Any]],
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """credentials: what this broker shows the leaders it follows (security/peers.py); None: plain."""
        self.replica_id, self._replica_epoch = replica_id, replica_epoch
        self._credentials = credentials
        self.max_bytes, self.max_wait_ms = max_bytes, max_wait_ms
        self._options = channel_options
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        found = self._channels.get(address)
        if found is None:
            found = self._channels[address] = (
                grpc.aio.secure_channel(address, self._credentials, options=self._options)
                if self._credentials is not None
                else grpc.aio.insecure_channel(address, options=self._options)
            )
        return found

    def link(self, address: str) -> GrpcLeaderLink:
        return GrpcLeaderLink(self, address)

    @property
    def replica_epoch(self) -> int:
        return int(self._replica_epoch() or 0)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class GrpcLeaderLink:
    def __init__(self, pool: LinkPool, address: str) -> None:
        self.pool, self.address = pool, address
        self._call: Any = None
        self._closed = False
        replicate = methods.method("Replication", "Replicate")
        epoch = methods.method("Replication", "EpochEndOffset")
        channel = pool.channel(address)
        self._replicate = channel.stream_stream(
            replicate.path,
            request_serializer=replicate.request.SerializeToString,
            response_deserializer=replicate.response.FromString,
        )
        self._epoch_end = channel.unary_unary(
            epoch.path,
            request_serializer=epoch.request.SerializeToString,
            response_deserializer=epoch.response.FromString,
        )

    async def epoch_end_offset(
        self, topic: str, partition: int, leader_epoch: int, requested_epoch: int
    ) -> tuple[int, int]:
        try:
            reply = await self._epoch_end(
                pb.EpochEndOffsetRequest(
                    topic=topic, partition=partition, leader_epoch=leader_epoch, requested_epoch=requested_epoch
                ),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err, self.address) from None
        return reply.epoch, reply.end_offset

    async def fetch(self, topic: str, partition: int, leader_epoch: int, fetch_offset: int) -> tuple[bytes, int, int]:
        if self._closed:
            raise BrokerUnavailableError(f"the replication link to {self.address} is closed")
        if self._call is None:
            self._call = self._replicate()
        request = pb.ReplicaFetchRequest(
            topic=topic,
            partition=partition,
            replica_id=self.pool.replica_id,
            replica_epoch=self.pool.replica_epoch,
            leader_epoch=leader_epoch,
            fetch_offset=fetch_offset,
            max_bytes=self.pool.max_bytes,
            max_wait_ms=self.pool.max_wait_ms,
        )
        try:
            await asyncio.wait_for(self._call.write(request), CALL_TIMEOUT_S)
            reply = await asyncio.wait_for(self._call.read(), CALL_TIMEOUT_S + self.pool.max_wait_ms / 1000)
        except grpc.RpcError as err:
            self._reset()
            raise error_from_rpc(err, self.address) from None
        except asyncio.TimeoutError:
            self._reset()
            raise RequestTimeoutError(f"the leader at {self.address} did not answer a replica fetch in time") from None
        except asyncio.InvalidStateError:  # the stream ended (the leader went away) between two fetches
            self._reset()
            raise BrokerUnavailableError(f"the replication stream to {self.address} ended") from None
        if reply is grpc.aio.EOF:
            self._reset()
            raise BrokerUnavailableError(f"the leader at {self.address} ended the replication stream")
        if reply.HasField("error"):
            raise error_from_message(reply.error)
        return reply.batches, reply.high_watermark, reply.log_start

    def _reset(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def close(self) -> None:
        self._closed = True
        self._reset()
