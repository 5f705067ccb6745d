"""Retention policy, pure: which of a partition's oldest sealed segments may be deleted now.

Whole sealed segments only, oldest first, never the active one (Kafka's rules): a segment goes when
its newest record is older than retention_ms, or while the partition without it would still be at
least retention_bytes large.
"""

from __future__ import annotations

from collections.abc import Sequence


def segments_to_delete(
    sealed: Sequence[tuple[int, int]], total_bytes: int, now_ms: int, retention_ms: int, retention_bytes: int
) -> int:
    """How many of the oldest sealed segments to delete.

    sealed: (size_bytes, max_timestamp_ms) of each sealed segment, oldest first.
    total_bytes: size of the whole partition, the active segment included.
    """
    count = 0
    remaining = total_bytes
    for size, max_ts in sealed:
        too_old = retention_ms >= 0 and max_ts >= 0 and now_ms - max_ts > retention_ms
        too_big = retention_bytes >= 0 and remaining - size >= retention_bytes
        if not (too_old or too_big):
            break
        count += 1
        remaining -= size
    return count
