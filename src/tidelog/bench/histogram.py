"""Latency histograms: HdrHistogram (the hdrhistogram package) in microseconds, mergeable across processes."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # an hour
SIGNIFICANT_DIGITS = 3      # values are kept to 0.1% precision
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class Latency:
    """Records latencies in microseconds; percentiles come back in milliseconds."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_us(self, value_us: float) -> None:
        self.hist.record_value(min(max(int(value_us), LOWEST_US), HIGHEST_US))

    def record_ns(self, value_ns: int) -> None:
        self.record_us(value_ns / 1000)

    @property
    def count(self) -> int:
        return self.hist.get_total_count()

    def encode(self) -> bytes:
        return self.hist.encode()

    def merge_encoded(self, encoded: bytes) -> None:
        self.hist.decode_and_add(encoded)

    def summary_ms(self) -> dict[str, float]:
        """p50, p90, p99, p99.9 and max in ms (empty when nothing was recorded)."""
        if self.count == 0:
            return {}
        out = {f"p{p:g}": self.hist.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
        out["max"] = self.hist.get_max_value() / 1000
        out["mean"] = self.hist.get_mean_value() / 1000
        return out
