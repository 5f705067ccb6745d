"""The named offsets of a partition. Each only moves forward (except through `truncate`, when a
replica cuts the records its leader never had); they are never merged into one.

- log_start: the first offset still stored (moves when retention deletes segments).
- log_end: the next offset to assign; everything below it is written to the segment files.
- flushed: everything below it is fsynced.
- high_watermark: everything below it is visible to readers. Under fsync="always" it follows
  `flushed` (a reader never sees a record that a crash could take back); otherwise `log_end`.

"Acknowledged" means: produce returned. Under "always" that implies flushed; under "interval" the
record is flushed within fsync_interval_ms; under "never" the OS decides when.
"""

from __future__ import annotations


class Offsets:
    __slots__ = ("log_start", "log_end", "flushed", "high_watermark")

    def __init__(self, log_start: int, log_end: int, flushed: int, high_watermark: int) -> None:
        assert log_start <= high_watermark <= log_end and flushed <= log_end
        self.log_start = log_start
        self.log_end = log_end
        self.flushed = flushed
        self.high_watermark = high_watermark

    def _advance(self, name: str, value: int) -> None:
        current = getattr(self, name)
        assert value >= current, f"{name} may only move forward ({current} -> {value})"
        setattr(self, name, value)

    def advance_log_start(self, value: int) -> None:
        self._advance("log_start", value)

    def advance_log_end(self, value: int) -> None:
        self._advance("log_end", value)

    def advance_flushed(self, value: int) -> None:
        if value > self.flushed:
            self._advance("flushed", min(value, self.log_end))

    def advance_high_watermark(self, value: int) -> None:
        if value > self.high_watermark:
            self._advance("high_watermark", min(value, self.log_end))

    def truncate(self, log_end: int) -> None:
        """The log was cut at log_end (a replica whose log diverged from its leader's): nothing at or
        past it is written, flushed or visible any more."""
        assert self.log_start <= log_end <= self.log_end, f"cut at {log_end} outside {self.log_start}..{self.log_end}"
        self.log_end = log_end
        self.flushed = min(self.flushed, log_end)
        self.high_watermark = min(self.high_watermark, log_end)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
