"""`topics alter` in a cluster: more partitions for a topic, or a new min_insync_replicas, written to
etcd in one transaction.

The transaction rewrites the topic record and creates the new partitions' records (leader: the
first replica, epoch 0, ISR: every replica, as a create does). It lands only on the topic record it
read (compare on its mod_revision) and only if none of the new partition keys exists: of two alters
at once, one lands and the other reads the topic again and decides afresh (growing to a count that
is no longer larger is then refused, naming the new count). Every broker then sees the change in its
snapshot: the replica manager adds the local partitions, and leaders read min_insync_replicas from
the topic record on every acks=all produce (no restart).

Event-loop only (aetcd calls).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..config import TopicConfig
from ..errors import ClusterUnavailableError, InvalidConfigError, InvalidPartitionError, UnknownTopicError
from .placement import (
    PartitionState,
    TopicPlacement,
    assign_added_replicas,
    partition_key,
    partitions_prefix,
    topic_key,
)

log = logging.getLogger("tidelog.cluster")

ATTEMPTS = 5
"""Reads and writes of one alter before it gives up (each failure means another writer changed the
topic record in between)."""


@dataclass(frozen=True)
class AlterResult:
    before: TopicPlacement
    after: TopicPlacement
    added: list[tuple[int, ...]]  # replica lists of partitions before.partitions.. (empty: none added)


def plan_alter(
    before: TopicPlacement,
    existing: Sequence[Sequence[int]],
    live: Sequence[int],
    partitions: int | None,
    min_insync_replicas: int | None,
    max_partitions: int,
) -> tuple[TopicPlacement, list[tuple[int, ...]]]:
    """The topic record after the alter, and the replica lists of its new partitions. Pure: refuses
    a count that does not grow (InvalidPartitionError naming the current count) and a
    min_insync_replicas outside 1..replication factor (InvalidConfigError)."""
    if partitions is None and min_insync_replicas is None:
        raise InvalidConfigError("nothing to alter: give a new partition count and/or min_insync_replicas")
    after = before
    added: list[tuple[int, ...]] = []
    if partitions is not None:
        if partitions <= before.partitions:
            raise InvalidPartitionError(
                f"topic {before.name!r} has {before.partitions} partitions; the count can only grow, so "
                f"{partitions} is refused",
                topic=before.name,
            )
        if partitions > max_partitions:
            raise InvalidPartitionError(
                f"{partitions} partitions is over max_partitions_per_topic={max_partitions}", topic=before.name
            )
        added = assign_added_replicas(live, existing, partitions - before.partitions, before.replication_factor)
        after = replace(after, partitions=partitions)
    if min_insync_replicas is not None:
        if not 1 <= min_insync_replicas <= before.replication_factor:
            raise InvalidConfigError(
                f"min_insync_replicas must be 1 to the replication factor {before.replication_factor} of topic "
                f"{before.name!r}, got {min_insync_replicas}"
                + (": no acks=all produce could ever succeed" if min_insync_replicas > 1 else "")
            )
        config = {**before.config, "min_insync_replicas": min_insync_replicas}
        TopicConfig().with_overrides(config)  # the whole document stays valid
        after = replace(after, config=config)
    return after, added


async def alter_topic(
    client: Any,
    cluster: str,
    name: str,
    live: Sequence[int],
    partitions: int | None = None,
    min_insync_replicas: int | None = None,
    max_partitions: int = 10_000,
    storage: Mapping[int, str] | None = None,
) -> AlterResult:
    """Read the topic, plan the change, write it fenced on what was read; read again when another
    writer got there first (at most ATTEMPTS times). `storage`: each live broker's data-directory id,
    recorded with the new partitions' ISR as a create does."""
    key = topic_key(cluster, name)
    tx = client.transactions
    for _ in range(ATTEMPTS):
        found = await client.get(key)
        if found is None:
            raise UnknownTopicError(f"unknown topic {name!r}", topic=name)
        before = TopicPlacement.decode(name, found.value)
        existing = await _replica_lists(client, cluster, name, before.partitions)
        after, added = plan_alter(before, existing, live, partitions, min_insync_replicas, max_partitions)
        compare = [tx.mod(key) == found.mod_revision]
        puts = [tx.put(key, after.encode())]
        for offset, brokers in enumerate(added):
            pkey = partition_key(cluster, name, before.partitions + offset)
            compare.append(tx.create(pkey) == 0)
            puts.append(
                tx.put(pkey, PartitionState(tuple(brokers), brokers[0], 0, ()).with_isr(brokers, storage).encode())
            )
        done, _ = await client.transaction(compare=compare, success=puts, failure=[])
        if done:
            log.warning(
                "topic altered",
                extra={
                    "event": "topic_altered",
                    "topic": name,
                    "partitions": after.partitions,
                    "previous_partitions": before.partitions,
                    "min_insync_replicas": after.config.get("min_insync_replicas"),
                    "added_replicas": [list(r) for r in added],
                },
            )
            return AlterResult(before, after, added)
    raise ClusterUnavailableError(f"topic {name!r} kept changing while it was altered; run the command again")


async def _replica_lists(client: Any, cluster: str, name: str, count: int) -> list[tuple[int, ...]]:
    """The replica lists of partitions 0..count-1 as etcd has them (an unreadable one counts as empty)."""
    start = partitions_prefix(cluster, name)
    lists: dict[int, tuple[int, ...]] = {}
    for kv in await client.get_prefix(start):
        try:
            number = int(kv.key[len(start) :])
            lists[number] = tuple(int(b) for b in json.loads(kv.value)["replicas"])
        except (ValueError, KeyError, TypeError):
            continue
    return [lists.get(p, ()) for p in range(count)]
