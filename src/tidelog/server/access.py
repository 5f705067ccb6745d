"""The one place every tidelog RPC is let in: who is calling (authentication), then whether it may
(authorization), before its handler reads a request or does anything.

`AccessGate.wrap` puts the checks in front of each handler (as admission does its limits). A unary call
is checked with its request; a stream with each request before the handler sees it: a Produce stream
writing to a topic it may not is ended with PERMISSION_DENIED at that request, having appended only
what came before it. `NEEDS` says, per method, what a request asks: (operation, resource kind, name).
The caller's principal is in `security.authorizer.caller` (a context variable of the RPC's task).

Health checks and reflection are not tidelog services and stay open: a probe needs no secret, and they
say nothing about the data.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from ..errors import AuthenticationError, AuthorizationError, InvalidRequestError, TidelogError
from ..security.acls import CLUSTER
from ..security.authenticator import Authenticator
from ..security.authorizer import Authorizer, audit_done, caller
from ..v1 import tidelog_pb2 as pb
from ..wire.messages import decode
from . import status
from .handler_shape import behavior_of, rebuilt

AUDITED = {"create", "delete", "alter"}
"""Operations every one of which leaves an audit line once done (denials always do: security/authorizer.py)."""

Need = tuple[str, str, str]  # (operation, resource kind, name)


def _topics(operation: str, names: Iterable[str]) -> list[Need]:
    return [(operation, "topic", name) for name in dict.fromkeys(names)]


def _subscribe_stream(request: pb.SubscribeRequest) -> list[Need]:
    return [("consume", "topic", request.start.topic)] if request.WhichOneof("kind") == "start" else []


def _consume_queue_stream(request: pb.ConsumeQueueRequest) -> list[Need]:
    return [("consume", "queue", request.start.queue)] if request.HasField("start") else []


def _declare(r: pb.DeclareQueueRequest) -> list[Need]:
    needs = [("consume", "queue", r.queue), *_topics("consume", r.topics)]
    return needs + ([("produce", "topic", r.dead_letter_topic)] if r.dead_letter_topic else [])


NEEDS: dict[str, tuple[type, Callable[[Any], list[Need]]]] = {
    "Producer/ProduceRecords": (pb.ProduceRecordsRequest, lambda r: [("produce", "topic", r.topic)]),
    "Consumer/Fetch": (pb.FetchRequest, lambda r: [("consume", "topic", r.topic)]),
    "Consumer/FetchRecords": (pb.FetchRequest, lambda r: [("consume", "topic", r.topic)]),
    "Admin/CreateTopic": (pb.CreateTopicRequest, lambda r: [("create", "topic", r.name)]),
    "Admin/DeleteTopic": (pb.DeleteTopicRequest, lambda r: [("delete", "topic", r.name)]),
    "Admin/AlterTopic": (pb.AlterTopicRequest, lambda r: [("alter", "topic", r.name)]),
    "Admin/DescribeTopic": (pb.DescribeTopicRequest, lambda r: [("describe", "topic", r.name)]),
    "Admin/ListOffsets": (pb.ListOffsetsRequest, lambda r: [("describe", "topic", r.topic)]),
    "Admin/ListTopics": (pb.ListTopicsRequest, lambda r: [("describe", "cluster", CLUSTER)]),
    "Admin/DescribeCluster": (pb.DescribeClusterRequest, lambda r: [("describe", "cluster", CLUSTER)]),
    "Admin/Metadata": (
        pb.MetadataRequest,
        lambda r: _topics("describe", r.topics) if r.topics else [("describe", "cluster", CLUSTER)],
    ),
    "Groups/JoinGroup": (
        pb.JoinGroupRequest,
        lambda r: [("consume", "group", r.group_id), *_topics("consume", r.topics)],
    ),
    "Groups/Heartbeat": (pb.HeartbeatRequest, lambda r: [("consume", "group", r.group_id)]),
    "Groups/LeaveGroup": (pb.LeaveGroupRequest, lambda r: [("consume", "group", r.group_id)]),
    "Groups/CommitOffsets": (
        pb.CommitOffsetsRequest,
        lambda r: [("consume", "group", r.group_id), *_topics("consume", (o.topic for o in r.offsets))],
    ),
    "Groups/FetchCommittedOffsets": (pb.FetchCommittedOffsetsRequest, lambda r: [("describe", "group", r.group_id)]),
    "Groups/ListGroups": (pb.ListGroupsRequest, lambda r: [("describe", "cluster", CLUSTER)]),
    "Groups/DescribeGroup": (pb.DescribeGroupRequest, lambda r: [("describe", "group", r.group_id)]),
    "Groups/DeleteGroup": (pb.DeleteGroupRequest, lambda r: [("delete", "group", r.group_id)]),
    "Groups/ResetOffsets": (
        pb.ResetOffsetsRequest,
        lambda r: [("alter", "group", r.group_id), ("describe", "topic", r.topic)],
    ),
    "Replication/EpochEndOffset": (pb.EpochEndOffsetRequest, lambda r: [("admin", "cluster", CLUSTER)]),
    "Queue/Declare": (pb.DeclareQueueRequest, _declare),
    "Queue/Receive": (pb.ReceiveRequest, lambda r: [("consume", "queue", r.queue)]),
    "Queue/Answer": (pb.AnswerRequest, lambda r: [("consume", "queue", r.queue)]),
    "Queue/Leave": (pb.LeaveQueueRequest, lambda r: [("consume", "queue", r.queue)]),
    "Queue/ListQueues": (pb.ListQueuesRequest, lambda r: [("describe", "cluster", CLUSTER)]),
    "Queue/DescribeQueue": (pb.DescribeQueueRequest, lambda r: [("describe", "queue", r.queue)]),
    "Queue/DeleteQueue": (pb.DeleteQueueRequest, lambda r: [("delete", "queue", r.queue)]),
    "Queue/ResetQueue": (pb.ResetQueueRequest, lambda r: [("alter", "queue", r.queue)]),
    "Queue/Redrive": (
        pb.RedriveRequest,
        lambda r: [("consume", "topic", r.source), ("produce", "topic", r.target)],
    ),
}
"""Unary methods: the request type and what a request asks."""
IN_STREAM = {"Producer/Produce"}
"""Streams whose requests are each answered, refused ones too (produce_service.topic_refusal asks
`AccessGate.topic_refusal`): a request another may not make does not end the stream."""
STREAM_NEEDS: dict[str, Callable[[bytes], list[Need]]] = {
    "Consumer/Subscribe": lambda raw: _subscribe_stream(decode(pb.SubscribeRequest, raw)),
    "Queue/Consume": lambda raw: _consume_queue_stream(decode(pb.ConsumeQueueRequest, raw)),
    "Replication/Replicate": lambda raw: [("admin", "cluster", CLUSTER)],
}
"""Streaming methods: what each request of the stream asks, from its bytes."""


def _short(path: str) -> str:
    """'/tidelog.v1.Producer/Produce' -> 'Producer/Produce'."""
    service, _, name = path.lstrip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}"


class AccessGate:
    """authorizer None: every authenticated caller may do anything (no ACL file)."""

    def __init__(self, authenticator: Authenticator, authorizer: Authorizer | None = None) -> None:
        self.authenticator = authenticator
        self.authorizer = authorizer
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler behind the checks (cached per method)."""
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._checked(_short(method), handler))
        return cached[1]

    async def _enter(self, context: grpc.aio.ServicerContext) -> str:
        try:
            name = await self.authenticator.principal(
                context.invocation_metadata() or (), context.auth_context() or {}, context.peer()
            )
        except AuthenticationError as exc:
            await status.abort(context, exc)
        caller.set(name)
        return name

    def topic_refusal(self, topic: str) -> AuthorizationError | None:
        """Why the caller of this task may not produce to `topic` (None: it may)."""
        return self._refusal(caller.get(), [("produce", "topic", topic)])

    def _refusal(self, who: str, needs: list[Need]) -> AuthorizationError | None:
        if self.authorizer is None:
            return None
        try:
            for operation, resource, name in needs:
                self.authorizer.check(who, operation, resource, name)
        except AuthorizationError as exc:
            return exc
        return None

    def _checked(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behavior = behavior_of(handler)[0]
        if handler.request_streaming:
            return rebuilt(handler, self._checked_stream(method, behavior))
        request_type, needs = NEEDS.get(method, (None, None))
        if needs is None:
            raise AssertionError(f"{method}: no authorization rule (server/access.py NEEDS)")

        async def checked_call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            who = await self._enter(context)
            asked: list[Need] = []
            if needs is not None:
                try:
                    asked = needs(decode(request_type, raw)) if request_type is not None else []
                except InvalidRequestError:
                    pass  # the handler refuses it, having done nothing
            refusal = self._refusal(who, asked)
            if refusal is not None:
                await status.abort(context, refusal)
            response = await behavior(raw, context)
            changes = [f"{op} {kind} {name}" for op, kind, name in asked if op in AUDITED]
            if changes:
                audit_done(who, method, changes)
            return response

        return rebuilt(handler, checked_call)

    def _checked_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        needs = STREAM_NEEDS.get(method)
        if self.authorizer is not None and needs is None and method not in IN_STREAM:
            raise AssertionError(f"{method}: no authorization rule (server/access.py STREAM_NEEDS)")
        assert inspect.isasyncgenfunction(behavior), f"{method}: tidelog streaming handlers are async generators"

        async def checked_stream(raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            who = await self._enter(context)
            refused: list[TidelogError] = []

            async def allowed() -> AsyncIterator[bytes]:
                """The requests up to the first one the caller may not make: the stream then looks
                half-closed to the handler, which finishes what came before."""
                async for raw in raw_requests:
                    if self.authorizer is not None and needs is not None:
                        try:
                            asked = needs(raw)
                        except InvalidRequestError:
                            asked = []  # malformed: the handler refuses it
                        refusal = self._refusal(who, asked)
                        if refusal is not None:
                            refused.append(refusal)
                            return
                    yield raw

            responses = behavior(allowed(), context)
            try:
                async for response in responses:
                    yield response
            finally:
                await responses.aclose()  # at once, as admission's budgets expect, not when collected
            if refused:
                await status.abort(context, refused[0])

        return checked_stream


def method_paths() -> set[str]:
    """Every tidelog method, as NEEDS and STREAM_NEEDS name them (for the test that none is missing)."""
    return {f"{s.name}/{m.name}" for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods}
