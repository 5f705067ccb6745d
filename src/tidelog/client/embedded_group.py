"""Group consumers inside the process: the same groups as over gRPC, on an in-process coordinator.

coordinator = GroupCoordinator(engine)
with EmbeddedGroupConsumer(coordinator, "billing", ["orders"], auto_commit=False) as c:
    for rec in c:
        handle(rec)
        c.commit()
"""

from __future__ import annotations

from ..codec.batch import Record
from ..values import TopicPartition
from .member import GroupMember


class _EngineReader:
    """One partition read straight from the engine (long-polling fetches)."""

    def __init__(self, engine, tp: TopicPartition, offset: int) -> None:
        self.engine, self.tp, self.offset = engine, tp, offset

    def poll(self, timeout_s: float) -> list[Record]:
        result = self.engine.fetch(
            self.tp[0], self.tp[1], self.offset, max_bytes=1 << 20, max_wait_ms=int(timeout_s * 1000)
        )
        records = result.records()
        if records:
            self.offset = records[-1].offset + 1
        return records

    def close(self) -> None:
        pass


class EmbeddedGroupConsumer(GroupMember):
    def __init__(self, coordinator, group_id: str, topics, **options) -> None:
        self.coordinator = coordinator
        super().__init__(group_id, topics, **options)

    def _now(self):
        return self.coordinator.clock() / 1000  # the lease runs on the clock the sessions run on

    def _join(self, member_id, owned):
        return self.coordinator.join(
            self.group_id,
            self.topics,
            session_timeout_ms=self.session_timeout_ms,
            assignor=self.assignor,
            client_id=self.client_id,
            member_id=member_id,
            owned=owned,
        )

    def _heartbeat(self, member_id, generation, owned):
        return self.coordinator.heartbeat(self.group_id, member_id, generation, owned)

    def _leave(self, member_id):
        self.coordinator.leave(self.group_id, member_id)

    def _commit(self, member_id, generation, offsets):
        self.coordinator.commit(self.group_id, member_id, generation, offsets)

    def _committed(self, partitions):
        return self.coordinator.committed(self.group_id, partitions)

    def _start(self, tp, where):
        return self.coordinator.engine.list_offsets(tp[0], tp[1], where)

    def _reader(self, tp, offset):
        return _EngineReader(self.coordinator.engine, tp, offset)
