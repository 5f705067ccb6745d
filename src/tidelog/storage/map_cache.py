"""Bounds how many sealed segments are mapped at once: a least-recently-used set of segments.

A sealed segment holds no file descriptor (its maps do not need one) and maps its `.log` and index
files when first read; this cache drops the maps of the segments used longest ago once more than
`capacity` are mapped, so a partition's history costs neither descriptors nor an unbounded number of
maps (the kernel caps maps per process at vm.max_map_count). Dropping a map never breaks a reader:
a reader keeps the view it took, and the mapping goes when the last view goes. The active segment of
each partition is never in the cache.

Thread-safe: one lock around the order; segments are told to drop their maps outside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol


class Mapped(Protocol):
    def drop_maps(self) -> None: ...


class MapCache:
    def __init__(self, capacity: int | None) -> None:
        """capacity: segments kept mapped (None: no limit)."""
        self.capacity = capacity
        self._lock = threading.Lock()
        self._order: OrderedDict[int, Mapped] = OrderedDict()

    def touch(self, segment: Mapped) -> None:
        """segment was just used (and is mapped): keep it, and unmap the least recently used past capacity."""
        key = id(segment)
        with self._lock:
            if key in self._order:
                self._order.move_to_end(key)
                return
            self._order[key] = segment
            victims = []
            while self.capacity is not None and len(self._order) > self.capacity:
                victims.append(self._order.popitem(last=False)[1])
        for victim in victims:
            victim.drop_maps()

    def forget(self, segment: Mapped) -> None:
        """segment is closed, deleted or active again: no longer tracked."""
        with self._lock:
            self._order.pop(id(segment), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._order)


UNBOUNDED = MapCache(None)
"""For segments opened outside an engine (tools, tests): nothing is unmapped early."""
