"""Which partition each record goes to.

Keyed records: Kafka's default partitioner, (murmur2(key) & 0x7fffffff) % partitions, so a key maps to
the same partition here, in our client and in any Kafka client. Keyless records: all records of one
produce call go to one partition, and the topic's next call to the next (Kafka's sticky partitioning),
so the keyless part of a call stays together. One Partitioner per topic; thread-safe.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

import numpy as np

from .._native import partition_hash
from ..errors import InvalidRequestError


class Partitioner:
    def __init__(self) -> None:
        self._next = itertools.count()
        self._lock = threading.Lock()

    def sticky(self, partitions: int) -> int:
        with self._lock:
            return next(self._next) % partitions

    def split(self, partitions: int, keys: Sequence | None) -> list[tuple[int, np.ndarray | None]]:
        """[(partition, indices of the records that go there, or None for all)], by partition."""
        if keys is None or partitions == 1:
            return [(self.sticky(partitions), None)]
        try:
            parts = partition_hash.partitions_for_keys(keys, partitions)
        except TypeError as exc:
            raise InvalidRequestError(str(exc)) from None
        keyless = parts < 0
        if keyless.any():
            parts[keyless] = self.sticky(partitions)
        first = parts[0]
        if (parts == first).all():
            return [(int(first), None)]
        order = np.argsort(parts, kind="stable")
        cuts = np.flatnonzero(np.diff(parts[order])) + 1
        return [(int(parts[idx[0]]), idx) for idx in np.split(order, cuts)]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives key."""
    return int(partition_hash.partitions_for_keys([key], partitions)[0])
