"""A consumer-group member over gRPC: the Groups service for membership and commits, one Subscribe
stream per assigned partition for records (see client/member.py for the protocol)."""

from __future__ import annotations

from collections.abc import Sequence

from ..v1 import tidelog_pb2 as pb
from ..values import MemberState
from ..wire import methods
from .channel import DEFAULT_TARGET
from .consumer import PartitionConsumer
from .member import GroupMember
from .metadata import Metadata
from .security import ClientSecurity


def _tp_messages(tps):
    return [pb.TopicPartition(topic=t, partition=p) for t, p in tps]


class GroupConsumer(GroupMember):
    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        group_id: str = "",
        topics=(),
        *,
        timeout_s: float = 30.0,
        credit_bytes: int = 8 << 20,
        security: ClientSecurity | None = None,
        **options,
    ) -> None:
        self.target = target
        self.credit_bytes = credit_bytes
        self._metadata = Metadata(target, timeout_s=timeout_s, security=security)
        self._session_token = ""  # given by the join that made this member (groups_service: session_token)

        def rpc(name):
            method = methods.method("Groups", name)
            return lambda request: self._metadata.call_coordinator(method, request)

        self._rpc_join = rpc("JoinGroup")
        self._rpc_heartbeat = rpc("Heartbeat")
        self._rpc_leave = rpc("LeaveGroup")
        self._rpc_commit = rpc("CommitOffsets")
        self._rpc_committed = rpc("FetchCommittedOffsets")
        self._list_offsets = methods.method("Admin", "ListOffsets")
        super().__init__(group_id, topics, **options)

    def _state(self, msg):
        if msg.session_token:  # the join that made this member: its secret for every call as the member
            self._session_token = msg.session_token
        return MemberState(
            msg.member_id,
            msg.generation,
            [(tp.topic, tp.partition) for tp in msg.partitions],
            msg.heartbeat_interval_ms,
        )

    def _join(self, member_id, owned):
        return self._state(
            self._rpc_join(
                pb.JoinGroupRequest(
                    group_id=self.group_id,
                    topics=self.topics,
                    session_timeout_ms=self.session_timeout_ms,
                    assignor=self.assignor,
                    client_id=self.client_id,
                    member_id=member_id or "",
                    owned=_tp_messages(owned),
                    session_token=self._session_token if member_id else "",
                )
            )
        )

    def _heartbeat(self, member_id, generation, owned):
        return self._state(
            self._rpc_heartbeat(
                pb.HeartbeatRequest(
                    group_id=self.group_id,
                    member_id=member_id,
                    generation=generation,
                    owned=_tp_messages(owned),
                    session_token=self._session_token,
                )
            )
        )

    def _leave(self, member_id):
        self._rpc_leave(
            pb.LeaveGroupRequest(group_id=self.group_id, member_id=member_id, session_token=self._session_token)
        )

    def _commit(self, member_id, generation, offsets):
        self._rpc_commit(
            pb.CommitOffsetsRequest(
                group_id=self.group_id,
                member_id=member_id,
                generation=generation,
                offsets=[pb.PartitionOffset(topic=t, partition=p, offset=o) for (t, p), o in sorted(offsets.items())],
                session_token=self._session_token if member_id else "",
            )
        )

    def _committed(self, partitions):
        reply = self._rpc_committed(
            pb.FetchCommittedOffsetsRequest(group_id=self.group_id, partitions=_tp_messages(partitions))
        )
        return {(o.topic, o.partition): o.offset for o in reply.offsets}

    def _start(self, tp, where):
        request = pb.ListOffsetsRequest(topic=tp[0], partition=tp[1])
        request.position.boundary = pb.LATEST if where == "latest" else pb.EARLIEST
        return self._metadata.call_leader(tp[0], tp[1], self._list_offsets, request).offset

    def _reader(self, tp, offset):
        return PartitionConsumer(
            self.target, tp[0], tp[1], offset, credit_bytes=self.credit_bytes, metadata=self._metadata
        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._metadata.close()
