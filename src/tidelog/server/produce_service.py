"""tidelog.v1.Producer: streaming produce of pre-encoded batches, and a per-record unary form.

Produce reads requests as raw bytes (no protobuf copy of the batches), keeps up to
max_inflight_bytes_per_stream read ahead of their acks, up to max_inflight_bytes_per_connection on all
streams of one client connection, and up to max_inflight_bytes on all streams together (then stops
reading: backpressure travels to the client through gRPC flow control), appends everything that has
arrived in one engine call (one fsync per partition under fsync="always") and answers with one ranged
ack for all of it, in order. A stream that ends, however it ends, gives back what it held of the
connection's and the shared budgets. At a graceful stop (`stop()`) every stream answers what has
arrived and ends at once, also an idle one: the client resends anything later, so a connected
producer never holds the shutdown for its grace period. Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NamedTuple

import grpc

from ..config import ServerConfig
from ..engine.async_engine import AsyncEngine
from ..errors import BrokerUnavailableError, InvalidRequestError, TidelogError
from ..replication.manager import ACKS_LEADER, ACKS_NONE, ReplicaManager
from ..v1 import tidelog_pb2 as pb
from ..values import ProduceResult
from ..wire import framing, methods
from ..wire.statuses import error_message
from . import requests, status
from .admission import Connection
from .budget import ByteBudget

log = logging.getLogger("tidelog.server")


JOINING = "the broker is joining its cluster; retry shortly"


class _Refused(NamedTuple):
    """A request refused before the engine saw it; sequence and topic are echoed when they were read."""

    error: TidelogError
    sequence: int = 0
    topic: str = ""


class ProduceService:
    def __init__(
        self,
        engine: AsyncEngine,
        config: ServerConfig,
        connection: Callable[[str], Connection | None] = lambda peer: None,
        replicas: Callable[[], ReplicaManager | None] = lambda: None,
    ) -> None:
        self.engine = engine
        self._replicas = replicas  # in a cluster: the leader checks and acks=all waits
        self.topic_refusal: Callable[[str], TidelogError | None] | None = None
        """With ACLs (server/access.py): why the caller may not produce to a topic, checked per request
        of a stream and answered in the stream (the others go on), as Kafka answers per partition."""
        self.config = config
        self._shared = ByteBudget(config.max_inflight_bytes)
        self._connection = connection  # the state of the connection a call came on (server/admission.py)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """End every Produce stream once it has answered what arrived (graceful shutdown)."""
        self._stopping.set()

    @property
    def budget(self) -> ByteBudget:
        """The produce bytes read ahead of their acks on the whole broker (shared with the Kafka listener)."""
        return self._shared

    @property
    def inflight_bytes(self) -> int:
        """Produce bytes read ahead of their acks on all streams."""
        return self._shared.used

    def handler(self) -> grpc.GenericRpcHandler:
        return methods.handlers(
            "Producer",
            {
                "Produce": requests.stream(self.produce),
                "ProduceRecords": requests.unary(self.produce_records),
            },
        )

    async def produce(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProduceResponse]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        budget = ByteBudget(self.config.max_inflight_bytes_per_stream)
        connection = self._connection(context.peer())
        # Always taken in this order (stream, connection, server), so streams waiting for one another cannot
        # deadlock; what this stream holds of the budgets it shares is given back when it ends.
        shared = [b for b in (connection.produce if connection is not None else None, self._shared) if b is not None]
        held = [0] * len(shared)

        async def read_ahead() -> None:
            try:
                async for raw in request_iterator:
                    await budget.acquire(len(raw))
                    for i, b in enumerate(shared):
                        await b.acquire(len(raw))
                        held[i] += len(raw)
                    queue.put_nowait(raw)
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read_ahead())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done = False
            while not done:
                if queue.empty():
                    getting = asyncio.ensure_future(queue.get())
                    await asyncio.wait((getting, stopping), return_when=asyncio.FIRST_COMPLETED)
                    if not getting.done():  # stopping, and nothing arrived: end the stream now
                        getting.cancel()
                        break
                    item = getting.result()
                else:
                    item = queue.get_nowait()
                if item is None:
                    break
                raws = [item]
                while not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        done = True
                        break
                    raws.append(item)
                response = await self._append(raws)
                size = sum(len(r) for r in raws)
                budget.release(size)
                for i, b in enumerate(shared):
                    b.release(size)
                    held[i] -= size
                yield response
                if self._stopping.is_set() and queue.empty():
                    break
            if reader.done() and not reader.cancelled():
                error = reader.exception()
                if error is not None:
                    raise error
        finally:
            stopping.cancel()
            reader.cancel()
            for i, b in enumerate(shared):
                b.release(held[i])
                held[i] = 0

    async def _append(self, raws: list[bytes]) -> pb.ProduceResponse:
        parsed: list[framing.ProduceRequestView | _Refused] = []
        for raw in raws:
            try:
                parsed.append(framing.parse_produce_request(raw))
            except framing.BadFieldError as exc:  # the sequence is known: the ack echoes it
                parsed.append(_Refused(InvalidRequestError(f"invalid ProduceRequest: {exc}"), exc.sequence, exc.topic))
            except ValueError as exc:
                parsed.append(_Refused(InvalidRequestError(f"malformed ProduceRequest: {exc}")))
        refusal_of = self.topic_refusal
        if refusal_of is not None:
            for i, p in enumerate(parsed):
                refusal = None if isinstance(p, _Refused) else refusal_of(p.topic)
                if refusal is not None:
                    parsed[i] = _Refused(refusal, p.sequence, p.topic)
        replicas = self._replicas()
        if replicas is None and self.config.cluster:
            # Not a member yet (a restart waits for its previous session to expire): its log may be
            # behind a newer leader epoch, so nothing is appended outside replication. Retriable.
            joining = BrokerUnavailableError(JOINING)
            parsed = [p if isinstance(p, _Refused) else _Refused(joining, p.sequence, p.topic) for p in parsed]
        requests = [(p.topic, p.partition, p.batches) for p in parsed if not isinstance(p, _Refused)]
        if replicas is None:
            now = self.engine.try_append(*requests[0]) if len(requests) == 1 else None  # (no pool hop)
            if now is not None:
                outcomes = iter([now])
            else:
                outcomes = iter(await self.engine.append_many(requests) if requests else [])
        else:
            acks = {(p.topic, p.partition): p.acks for p in parsed if not isinstance(p, _Refused)}
            outcomes = iter(
                await append_replicated(
                    self.engine, replicas, requests, [p.acks for p in parsed if not isinstance(p, _Refused)], acks
                )
            )
        response = pb.ProduceResponse()
        for p in parsed:
            if isinstance(p, _Refused):
                response.results.add(sequence=p.sequence, topic=p.topic, error=error_message(p.error))
                continue
            outcome = next(outcomes)
            if isinstance(outcome, ProduceResult):
                response.results.add(
                    sequence=p.sequence,
                    topic=p.topic,
                    partition=p.partition,
                    base_offset=outcome.base_offset,
                    last_offset=outcome.last_offset,
                )
            else:
                response.results.add(
                    sequence=p.sequence, topic=p.topic, partition=p.partition, error=error_message(outcome)
                )
        return response

    async def produce_records(
        self, request: pb.ProduceRecordsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProduceRecordsResponse:
        records = request.records
        values = [r.value if r.HasField("value") else None for r in records]
        keys = [r.key if r.HasField("key") else None for r in records]
        headers = [[(h.key, h.value if h.HasField("value") else None) for h in r.headers] for r in records]
        stamped = [r.HasField("timestamp_ms") for r in records]
        replicas = self._replicas()
        epochs: dict[tuple[str, int], int] = {}

        def admit(topic: str, partition: int) -> int:
            assert replicas is not None
            epochs[(topic, partition)] = epoch = replicas.admit(topic, partition, request.acks)
            return epoch

        try:
            if replicas is None and self.config.cluster:
                raise BrokerUnavailableError(JOINING)
            if replicas is not None and not self.engine.has_topic(request.topic):
                # not read from etcd here yet, or its copy not created yet: NOT_LEADER (retriable)
                raise replicas.leader_error(request.topic, request.partition if request.HasField("partition") else 0)
            timestamps = None
            if any(stamped):
                now = self.engine.clock()
                timestamps = [r.timestamp_ms if s else now for r, s in zip(records, stamped)]
            results = await self.engine.produce(
                request.topic,
                values,
                keys if any(k is not None for k in keys) else None,
                headers if any(headers) else None,
                partition=request.partition if request.HasField("partition") else None,
                timestamps=timestamps,
                admit=admit if replicas is not None else None,
            )
            if replicas is not None:
                for r in results:
                    await replicas.appended(r.topic, r.partition)
                for r in results:
                    if request.acks not in (ACKS_LEADER, ACKS_NONE):
                        await replicas.committed(
                            r.topic, r.partition, r.last_offset + 1, epochs[(r.topic, r.partition)]
                        )
        except TidelogError as exc:
            await status.abort(context, exc)
        response = pb.ProduceRecordsResponse()
        for r in results:
            response.results.add(
                topic=r.topic, partition=r.partition, base_offset=r.base_offset, last_offset=r.last_offset
            )
        return response


async def append_replicated(
    engine: AsyncEngine,
    replicas: ReplicaManager,
    requests: Sequence[tuple[str, int, Any]],
    acks: Sequence[int],
    by_partition: dict[tuple[str, int], int],
) -> list[ProduceResult | TidelogError]:
    """Append as the partitions' leader (refusing what this broker does not lead, or acks=all below
    min_insync_replicas), then wait for each request's acknowledgement level (tidelog's ACKS_*;
    by_partition: the level each partition is admitted at). Shared by gRPC and the Kafka listener."""
    epochs: dict[tuple[str, int], int] = {}

    def admit(topic: str, partition: int) -> int:
        epoch = replicas.admit(topic, partition, by_partition.get((topic, partition), 0))
        epochs[(topic, partition)] = epoch
        return epoch

    # Refused before the engine sees them: what this broker does not lead, also a topic it has not
    # created its copy of yet (the engine would call that unknown, which is not retriable).
    refused: dict[int, TidelogError] = {}
    for i, (topic, partition, _) in enumerate(requests):
        try:
            replicas.leading(topic, partition)
        except TidelogError as exc:
            refused[i] = exc
    admitted = [r for i, r in enumerate(requests) if i not in refused]
    appended = iter(await engine.append_many(admitted, admit) if admitted else [])
    outcomes = [refused[i] if i in refused else next(appended) for i in range(len(requests))]
    for key in {(r.topic, r.partition) for r in outcomes if isinstance(r, ProduceResult)}:
        await replicas.appended(*key)
    return list(await asyncio.gather(*(_acked(replicas, o, a, epochs) for o, a in zip(outcomes, acks))))


async def _acked(
    replicas: ReplicaManager, outcome: ProduceResult | TidelogError, acks: int, epochs: dict
) -> ProduceResult | TidelogError:
    if not isinstance(outcome, ProduceResult) or acks in (ACKS_LEADER, ACKS_NONE):
        return outcome
    try:
        await replicas.committed(
            outcome.topic, outcome.partition, outcome.last_offset + 1, epochs[(outcome.topic, outcome.partition)]
        )
    except TidelogError as exc:
        return exc
    return outcome
