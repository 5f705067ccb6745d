"""Latency histograms in microseconds, mergeable across processes, on numpy alone.

HdrHistogram's log-linear bucketing, written out here so that installing tidelog does not pull in the
hdrhistogram package (and through it pbr and setuptools): values below 2048 µs each have a bucket;
above, every power of two is cut into 1024 buckets, so a value is known to within 1/1024 (0.1%,
three significant digits) from a microsecond to an hour, in 23,552 counters.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # an hour
PERCENTILES = (50.0, 90.0, 99.0, 99.9)

_EXACT = 2048  # values below this have a bucket each
_HALF = _EXACT // 2  # buckets per power of two above it
_BUCKETS = _EXACT + (HIGHEST_US.bit_length() - _EXACT.bit_length() + 1) * _HALF
_HEADER = struct.Struct("<4sqqd")  # magic, count, max, sum
_MAGIC = b"TLH1"


def bucket_of(value_us: int) -> int:
    if value_us < _EXACT:
        return value_us
    shift = value_us.bit_length() - _EXACT.bit_length() + 1  # value >> shift lands in [_HALF, _EXACT)
    return _EXACT + (shift - 1) * _HALF + ((value_us >> shift) - _HALF)


def highest_in_bucket(index: int) -> int:
    """The largest value that falls in bucket `index` (what a percentile reports, as HdrHistogram does)."""
    if index < _EXACT:
        return index
    shift, sub = divmod(index - _EXACT, _HALF)
    shift += 1
    return ((sub + _HALF + 1) << shift) - 1


class Latency:
    """Records latencies in microseconds; percentiles come back in milliseconds."""

    def __init__(self) -> None:
        self.counts = np.zeros(_BUCKETS, dtype=np.int64)
        self._count = 0
        self._max_us = 0
        self._sum_us = 0.0

    def record_us(self, value_us: float) -> None:
        value = min(max(int(value_us), LOWEST_US), HIGHEST_US)
        self.counts[bucket_of(value)] += 1
        self._count += 1
        self._sum_us += value
        if value > self._max_us:
            self._max_us = value

    def record_ns(self, value_ns: int) -> None:
        self.record_us(value_ns / 1000)

    @property
    def count(self) -> int:
        return self._count

    def encode(self) -> bytes:
        """Bytes another process can merge_encoded(): the counters, compressed (mostly zeros)."""
        return _HEADER.pack(_MAGIC, self._count, self._max_us, self._sum_us) + zlib.compress(
            self.counts.astype("<i8").tobytes(), 1
        )

    def merge_encoded(self, encoded: bytes) -> None:
        magic, count, max_us, sum_us = _HEADER.unpack_from(encoded)
        if magic != _MAGIC:
            raise ValueError("not an encoded tidelog latency histogram")
        self.counts += np.frombuffer(zlib.decompress(encoded[_HEADER.size :]), dtype="<i8")
        self._count += count
        self._sum_us += sum_us
        self._max_us = max(self._max_us, max_us)

    def value_at_percentile_us(self, percentile: float) -> int:
        """The smallest bucket top with at least `percentile`% of the values at or below it (never above
        the largest value recorded)."""
        rank = max(1, int(percentile / 100 * self._count + 0.5))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(highest_in_bucket(index), self._max_us)

    def summary_ms(self) -> dict[str, float]:
        """p50, p90, p99, p99.9, max and mean in ms (empty when nothing was recorded)."""
        if self._count == 0:
            return {}
        out = {f"p{p:g}": self.value_at_percentile_us(p) / 1000 for p in PERCENTILES}
        out["max"] = self._max_us / 1000
        out["mean"] = self._sum_us / self._count / 1000
        return out
