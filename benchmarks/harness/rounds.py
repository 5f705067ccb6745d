"""How a figure is made: every system once per round, the order rotating, a warm-up discarded, medians.

Machine drift (another job, writeback, the host) hits all systems alike when they run back to back in the
same round, so ratios are taken between systems of the same run: the ratio of medians, and the min-max of
the per-round ratios, which shows how stable it is. Before each round the page cache's dirty data is
written back (`os.sync`) and before each run garbage is collected, both untimed, so that neither lands in a
timed loop.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .machine import LoadMeter
from .processes import log


@dataclass
class Sample:
    """One timed run: records and payload bytes moved in `seconds`; `capped` when the time cap stopped it."""

    records: int
    nbytes: int
    seconds: float
    capped: bool = False

    @property
    def rps(self) -> float:
        return self.records / self.seconds

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6

    def details(self) -> dict:
        """Per-run figures a scenario records besides the rate (listed run by run in the JSON)."""
        return {}


class Stopwatch:
    """The clock of one timed loop, started on creation: every loop is bounded by a count and a time cap."""

    def __init__(self, cap_s: float) -> None:
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + cap_s
        self.capped = False

    def expired(self, done: int, total: int) -> bool:
        """Past the cap? Then the run counts as capped if work was left (by any of the loop's threads)."""
        if time.perf_counter() <= self.deadline:
            return False
        self.capped = self.capped or done < total
        return True

    def count(self, total: int):
        """range(total), ending early once past the cap; `done` says how many steps ran."""
        self.done = 0
        for i in range(total):
            yield i
            self.done = i + 1
            if self.expired(self.done, total):
                return

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def sample(self, records: int, nbytes: int) -> Sample:
        return Sample(records, nbytes, self.elapsed(), self.capped)


METRICS: dict[str, Callable[[Sample], float]] = {
    "records/s": lambda s: s.rps,
    "MB/s": lambda s: s.mbps,
    "GB/s": lambda s: s.mbps / 1e3,
}


def values(samples: list[Sample], metric: str) -> list[float]:
    return [METRICS[metric](s) for s in samples]


def ratio(a: list[Sample], b: list[Sample], metric: str = "records/s") -> dict:
    """a / b: ratio of the medians, with the per-round ratios (a and b ran back to back in each round)."""
    va, vb = values(a, metric), values(b, metric)
    per_round = [x / y for x, y in zip(va, vb)]
    return {
        "ratio": statistics.median(va) / statistics.median(vb),
        "paired_min": min(per_round),
        "paired_max": max(per_round),
        "paired": per_round,
    }


def summary(section: str, system: str, metric: str, samples: list[Sample], warmups: list[Sample]) -> dict:
    """The JSON of one figure: median, min, max, every run and warm-up, and what each run did."""
    vals = values(samples, metric)
    out = {
        "section": section,
        "system": system,
        "metric": metric,
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "runs": vals,
        "warmup": values(warmups, metric),
        "capped_runs": sum(s.capped for s in samples),
        "records_per_run": [s.records for s in samples],
        "payload_bytes_per_run": [s.nbytes for s in samples],
        "seconds": [s.seconds for s in samples],
    }
    for s in samples:
        for key, value in s.details().items():
            out.setdefault(key, []).append(value)
    return out


@dataclass
class Rounds:
    """The results of every system in every section, gathered round by round."""

    runs: int
    warmup: int
    meter: LoadMeter = field(default_factory=LoadMeter)
    results: dict[tuple[str, str], list] = field(default_factory=dict)
    warmups: dict[tuple[str, str], list] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)  # (section, system), first run first

    def run(self, sections: dict[str, dict[str, Callable[[], object]]], runs: int | None = None) -> None:
        """Run each section's systems once per round (the order rotating each round; sections in turn within
        a round); the first `warmup` rounds are kept apart. A system returns a Sample or any result."""
        runs = self.runs if runs is None else runs
        total = self.warmup + runs
        for section, systems in sections.items():
            self.meter.start(section)
            for name in systems:
                if (section, name) not in self.results:
                    self.results[(section, name)], self.warmups[(section, name)] = [], []
                    self.order.append((section, name))
        for r in range(total):
            os.sync()
            for section, systems in sections.items():
                names = list(systems)
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    gc.collect()
                    result = systems[name]()
                    (self.warmups if r < self.warmup else self.results)[(section, name)].append(result)
                    rate = (
                        f"{result.rps / 1e3:,.1f}k records/s, {result.mbps:,.0f} MB/s ({result.seconds:.2f} s"
                        f"{', CAPPED' if result.capped else ''})"
                        if isinstance(result, Sample)
                        else "done"
                    )
                    log(f"  {section}, round {r + 1}/{total}{' (warm-up)' if r < self.warmup else ''}: {name}: {rate}")
        for section in sections:
            self.meter.stop(section)
            if self.meter.disturbed(section):
                log(f"  {section}: {self.meter.line(section)}")

    def add(self, section: str, system: str, results: list, warmups: list) -> None:
        """Figures a system's run measured besides its own (one run timing two things)."""
        self.results[(section, system)], self.warmups[(section, system)] = results, warmups
        self.order.append((section, system))

    def systems(self, section: str) -> list[str]:
        return [name for key, name in self.order if key == section]

    def sections(self) -> list[str]:
        return list(dict.fromkeys(key for key, _ in self.order))

    def has(self, section: str, *systems: str) -> bool:
        return all((section, s) in self.results for s in systems)

    def samples(self, section: str, system: str) -> list:
        return self.results[(section, system)]

    def median(self, section: str, system: str, metric: str) -> float | None:
        if not self.has(section, system):
            return None
        return statistics.median(values(self.samples(section, system), metric))

    def paired(self, section: str, a: str, b: str, metric: str = "MB/s") -> dict | None:
        """a / b within a section (see `ratio`), labelled for the JSON; None when either did not run."""
        if not self.has(section, a, b):
            return None
        return {
            "section": section,
            "numerator": a,
            "denominator": b,
            "metric": metric,
            **ratio(self.samples(section, a), self.samples(section, b), metric),
        }

    def summaries(self, section: str, metrics: tuple[str, ...]) -> list[dict]:
        return [
            summary(section, system, m, self.samples(section, system), self.warmups[(section, system)])
            for system in self.systems(section)
            for m in metrics
        ]
