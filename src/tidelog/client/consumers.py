"""`Consumer`: one name for both kinds of consumer, chosen by what it is given."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from .channel import DEFAULT_TARGET
from .consumer import PartitionConsumer
from .group_consumer import GroupConsumer


class Consumer(abc.ABC):  # noqa: B024 - no abstract method: both kinds are registered, not derived
    """A consumer: of one partition at a position, or, with group_id, a member of a consumer group.

        Consumer("localhost:50051", "orders", partition=0, offset=0)            # a PartitionConsumer
        Consumer("localhost:50051", group_id="billing", topics=["orders"],      # a GroupConsumer
                 auto_commit=False, on_assign=..., on_revoke=...)

    Constructing one gives a PartitionConsumer or a GroupConsumer; both are Consumers.
    """

    def __new__(
        cls,
        target: str | Sequence[str] = DEFAULT_TARGET,
        topic: str = "",
        partition: int = 0,
        offset: int | str | None = "earliest",
        *,
        group_id: str | None = None,
        topics=None,
        **options,
    ):
        if group_id is not None:
            return GroupConsumer(target, group_id, topics or ([topic] if topic else []), **options)
        return PartitionConsumer(target, topic, partition, offset, **options)


Consumer.register(PartitionConsumer)
Consumer.register(GroupConsumer)
