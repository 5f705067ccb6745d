"""A scripted stand-in for the broker's tidelog.v1.Producer/Produce, to break streams on purpose.

A real grpc.aio server on 127.0.0.1 (port 0), in a thread of its own, implementing Produce by hand:
each request is parsed with the wire codec and appended to an in-memory log per (topic, partition)
behind the broker's own ProducerState, so a resent batch it remembers is answered with its original
offsets and a sequence gap is refused, as the real broker does. Each stream follows the Plan at its
index in the script (later streams behave); what every stream received is recorded in order.

Thread-safe: the server's loop thread writes under a lock; the test thread reads snapshots.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import grpc

from tidelog.codec import batch as batch_codec
from tidelog.errors import TidelogError
from tidelog.partition.producer_state import ProducerState
from tidelog.v1 import tidelog_pb2 as pb
from tidelog.wire import framing, statuses

# What a stream does once it has handled `after` requests normally:
DROP = "drop"  # on the next request: break the stream, that request not appended
LOSE_ACK = "lose_ack"  # on the next request: append it, then break before its ack
BREAK_AFTER_ACK = "break_after_ack"  # at once after the last normal ack (not waiting for a request)
ERROR = "error"  # answer every later request with `error` (as the broker does: checked after
# the producer's sequence, so a resend it remembers still gets its offsets)
SILENT = "silent"  # keep reading, never answer again
DEAF = "deaf"  # stop reading (gRPC flow control then holds the client's writes); never answer
FAULTS = (DROP, LOSE_ACK, BREAK_AFTER_ACK, ERROR, SILENT, DEAF)


@dataclass(frozen=True)
class Plan:
    after: int
    fault: str
    error: TidelogError | None = None


@dataclass(frozen=True)
class Received:
    """One request as it arrived on a stream."""

    stream: int
    topic: str
    partition: int
    producer_epoch: int
    base_sequence: int
    count: int


class ScriptedBroker:
    def __init__(self, script: list[Plan] | None = None) -> None:
        self.script = list(script or [])
        self._lock = threading.Lock()
        self._received: list[list[Received]] = []
        self._logs: dict[tuple[str, int], list[bytes]] = {}
        self._states: dict[tuple[str, int], ProducerState] = {}
        self.refusal: TidelogError | None = None
        """Set: every new write is refused with this error on every stream (a full disk)."""
        self.ack_delay_s = 0.0
        self.max_outstanding: dict[tuple[str, int], int] = {}
        """Per (topic, partition): the most requests ever received on one stream and not yet answered."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-broker", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.target = f"127.0.0.1:{self.port}"

    async def _start(self) -> int:
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "tidelog.v1.Producer",
                    {
                        "Produce": grpc.stream_stream_rpc_method_handler(
                            self._produce,
                            request_deserializer=None,
                            response_serializer=pb.ProduceResponse.SerializeToString,
                        ),
                    },
                ),
            )
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- what happened ------------------------------------------------------------------------------
    def streams(self) -> list[list[Received]]:
        with self._lock:
            return [list(s) for s in self._received]

    def log(self, topic: str, partition: int) -> list[bytes]:
        with self._lock:
            return list(self._logs.get((topic, partition), ()))

    # -- the service -------------------------------------------------------------------------------
    async def _produce(self, request_iterator, context):
        with self._lock:
            index = len(self._received)
            self._received.append([])
            plan = self.script[index] if index < len(self.script) else None
        if plan is not None and plan.after == 0 and plan.fault == BREAK_AFTER_ACK:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: stream broken at open")
        inbox: asyncio.Queue = asyncio.Queue()
        outstanding: dict[tuple[str, int], int] = {}  # received and not answered, on this stream

        async def read_ahead() -> None:  # as the broker does: requests are read while earlier ones wait
            try:
                received = 0
                while not (plan is not None and plan.fault == DEAF and received >= plan.after):
                    raw = await anext(request_iterator, None)
                    if raw is None:
                        return
                    view = framing.parse_produce_request(raw)
                    info = batch_codec.validate(view.batches)[0]
                    key = (view.topic, view.partition)
                    with self._lock:
                        self._received[index].append(
                            Received(
                                index, view.topic, view.partition, info.producer_epoch, info.base_sequence, info.count
                            )
                        )
                        outstanding[key] = outstanding.get(key, 0) + 1
                        self.max_outstanding[key] = max(self.max_outstanding.get(key, 0), outstanding[key])
                    received += 1
                    inbox.put_nowait((view, info))
                await asyncio.Event().wait()  # deaf: never read again, until the client goes away
            finally:
                inbox.put_nowait(None)

        reader = asyncio.ensure_future(read_ahead())
        try:
            handled = 0
            while (item := await inbox.get()) is not None:
                view, info = item
                faulty = plan is not None and handled >= plan.after
                if faulty and plan.fault == DROP:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: stream broken, request lost")
                if faulty and plan.fault == SILENT:
                    continue
                if self.ack_delay_s:
                    await asyncio.sleep(self.ack_delay_s)
                result = self._append(view, info, plan.error if faulty and plan.fault == ERROR else None)
                if faulty and plan.fault == LOSE_ACK:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: stream broken, ack lost")
                handled += 1
                with self._lock:
                    outstanding[(view.topic, view.partition)] -= 1
                yield pb.ProduceResponse(results=[result])
                if plan is not None and handled >= plan.after and plan.fault == BREAK_AFTER_ACK:
                    await asyncio.sleep(0.01)  # let the ack leave first
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: stream broken after an ack")
        finally:
            reader.cancel()

    def _append(self, view, info, refuse: TidelogError | None) -> pb.ProduceResult:
        key = (view.topic, view.partition)
        answer = pb.ProduceResult(sequence=view.sequence, topic=view.topic, partition=view.partition)
        with self._lock:
            state = self._states.setdefault(key, ProducerState())
            log = self._logs.setdefault(key, [])
            try:
                original = state.check(info.producer_id, info.producer_epoch, info.base_sequence, info.count, {})
            except TidelogError as exc:
                answer.error.CopyFrom(statuses.error_message(exc))
                return answer
            if original is not None:  # a resend it remembers: the first attempt's offsets
                answer.base_offset, answer.last_offset = original.base_offset, original.last_offset
                return answer
            refuse = refuse or self.refusal
            if refuse is not None:
                answer.error.CopyFrom(statuses.error_message(refuse))
                return answer
            base = len(log)
            log.extend(bytes(r.value) for r in batch_codec.BatchView(view.batches))
            state.record(info.producer_id, info.producer_epoch, info.base_sequence, info.count, base, len(log) - 1, 0)
            answer.base_offset, answer.last_offset = base, len(log) - 1
            return answer
